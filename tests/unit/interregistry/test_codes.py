"""The §7 response-code catalogue: a snapshot (codes are never renumbered, only appended) and its uses."""

import json
from pathlib import Path

import pytest

from contracts.interregistry import (
    CODE_CATALOGUE,
    NOT_RECORDED_CODES,
    RECEIVER_REJECTION_CODES,
    CodeRaiser,
    IrxCode,
    code_definition,
    problem_slug,
)

SNAPSHOT = Path(__file__).with_name("codes_snapshot.json")


def _snapshot() -> list[dict]:
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))


def test_no_published_code_changed_or_disappeared() -> None:
    current = {entry.code: entry.model_dump(mode="json") for entry in CODE_CATALOGUE}
    for published in _snapshot():
        assert published["code"] in current, (
            f"code {published['code']} was removed: codes are never withdrawn"
        )
        assert current[published["code"]] == published, f"code {published['code']} changed meaning or status"


def test_new_codes_are_appended_to_the_snapshot_too() -> None:
    published = {entry["code"] for entry in _snapshot()}
    added = sorted({entry.code for entry in CODE_CATALOGUE} - published)
    assert not added, f"new codes {added}: add them to {SNAPSHOT.name} in the same change"


def test_the_catalogue_is_ordered_unique_and_named() -> None:
    codes = [entry.code for entry in CODE_CATALOGUE]
    assert codes == sorted(set(codes))
    assert codes == [int(code) for code in IrxCode], "every catalogue entry has exactly one IrxCode name"
    assert {entry.raised_by for entry in CODE_CATALOGUE} == set(CodeRaiser)
    assert code_definition(IrxCode.SIGNATURE_INVALID).http_status == 401
    with pytest.raises(KeyError):
        code_definition(1012)


@pytest.mark.parametrize(
    ("code", "slug"),
    [
        (1001, "message-refused"),
        (1006, "message-refused"),
        (3001, "message-refused"),
        (6004, "message-refused"),
        (2001, "transfer-rejected"),
        (3002, "transfer-rejected"),
        (4007, "transfer-rejected"),
        (5902, "transfer-rejected"),
        (6001, "transfer-final"),
        (6003, "transfer-final"),
        (7004, "reconciliation-refused"),
        (7005, "reconciliation-refused"),
    ],
)
def test_problem_types(code: int, slug: str) -> None:
    assert problem_slug(code) == slug


def test_refusals_that_record_nothing() -> None:
    assert {int(code) for code in NOT_RECORDED_CODES} == set(range(1001, 1012)) | {
        3001,
        4007,
        6004,
        7004,
        7005,
    }


def test_codes_a_receiver_may_reject_with() -> None:
    expected = set(range(2001, 2011)) | set(range(4002, 4009)) | {5902, 5903, 5904, 5905, 5906, 5907, 5999}
    assert {int(code) for code in RECEIVER_REJECTION_CODES} == expected
