"""The IR's crash-point hook (services/transactions/interregistry/crashpoints.py): armed only for the point
named in `REGISTRY_IRX_CRASH_AT`, never in the production IRX environment. That reaching an armed point kills
the process is shown by the two-process crash matrix (tests/e2e/test_simulator_process.py)."""

import pytest

from services.transactions.interregistry import crashpoints


@pytest.fixture(autouse=True)
def _sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_ENVIRONMENT", "test")
    monkeypatch.delenv("REGISTRY_IRX_ENVIRONMENT", raising=False)
    monkeypatch.delenv(crashpoints.CRASH_AT_VARIABLE, raising=False)


def test_armed_only_at_the_named_point(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not crashpoints.armed("before_relay_position")
    monkeypatch.setenv(crashpoints.CRASH_AT_VARIABLE, "before_relay_position")
    assert crashpoints.armed("before_relay_position")
    assert not crashpoints.armed("after_decision_commit_before_response")
    assert {"before_relay_position", "after_decision_commit_before_response"} == crashpoints.POINTS


@pytest.mark.parametrize(
    ("variable", "value"),
    [("REGISTRY_IRX_ENVIRONMENT", "production"), ("REGISTRY_ENVIRONMENT", "production")],
)
def test_never_armed_in_production(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(crashpoints.CRASH_AT_VARIABLE, "after_decision_commit_before_response")
    monkeypatch.setenv(variable, value)
    assert not crashpoints.armed("after_decision_commit_before_response")
    crashpoints.reach("after_decision_commit_before_response")  # returns: this test process is alive
