"""kit.config.ServiceSettings: per-service variables, their precedence, the embedded SQLite default."""

from pathlib import Path

import pytest

from kit.config import Environment, ServiceSettings


class _Settings(ServiceSettings):
    service_name = "widgets"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "REGISTRY_DATABASE_URL",
        "REGISTRY_PORT",
        "REGISTRY_WIDGETS_DATABASE_URL",
        "REGISTRY_WIDGETS_PORT",
        "REGISTRY_ENVIRONMENT",
        "REGISTRY_DATA_DIR",
    ):
        monkeypatch.delenv(name, raising=False)


def test_embedded_default_is_sqlite_under_the_data_dir(tmp_path: Path) -> None:
    settings = _Settings(data_dir=tmp_path)
    assert settings.database_url is None
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{(tmp_path / 'widgets.sqlite3').resolve()}"


def test_generic_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_DATABASE_URL", "postgresql+asyncpg://db/generic")
    monkeypatch.setenv("REGISTRY_PORT", "9001")
    settings = _Settings()
    assert (settings.resolved_database_url, settings.port) == ("postgresql+asyncpg://db/generic", 9001)


def test_per_service_variables_win_over_the_generic_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_DATABASE_URL", "postgresql+asyncpg://db/generic")
    monkeypatch.setenv("REGISTRY_PORT", "9001")
    monkeypatch.setenv("REGISTRY_WIDGETS_DATABASE_URL", "postgresql+asyncpg://db/widgets")
    monkeypatch.setenv("REGISTRY_WIDGETS_PORT", "9002")
    settings = _Settings()
    assert settings.database_url == "postgresql+asyncpg://db/widgets"
    assert settings.port == 9002


def test_explicit_values_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_DATABASE_URL", "postgresql+asyncpg://db/generic")
    monkeypatch.setenv("REGISTRY_WIDGETS_DATABASE_URL", "postgresql+asyncpg://db/widgets")
    monkeypatch.setenv("REGISTRY_WIDGETS_PORT", "9002")
    settings = _Settings(database_url="sqlite+aiosqlite:///given.sqlite3", port=1234)
    assert (settings.database_url, settings.port) == ("sqlite+aiosqlite:///given.sqlite3", 1234)


def test_another_service_s_variables_do_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_GADGETS_DATABASE_URL", "postgresql+asyncpg://db/gadgets")
    assert _Settings().database_url is None


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not _Settings().is_production
    monkeypatch.setenv("REGISTRY_ENVIRONMENT", "production")
    settings = _Settings()
    assert settings.environment is Environment.PRODUCTION
    assert settings.is_production
