"""kit.pagination: opaque cursors that round-trip and refuse anything this API did not issue."""

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.errors import BadRequest
from kit.pagination import decode_cursor, encode_cursor, page_of

FIELDS = ("vintage", "id")


def _raw(value: Any) -> str:
    """A cursor built the way encode_cursor builds one, around any JSON value."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def test_round_trip() -> None:
    key = {"vintage": 2024, "id": "CA0012-GHA01-GHA-150001-2024"}
    cursor = encode_cursor(key)
    assert decode_cursor(cursor, fields=FIELDS) == key
    assert decode_cursor(cursor, fields=reversed(FIELDS)) == key  # field order does not matter
    assert "=" not in cursor and "+" not in cursor and "/" not in cursor  # URL-safe, unpadded


@settings(max_examples=50, deadline=None)
@given(
    vintage=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    ident=st.text(max_size=40),
)
def test_round_trip_any_scalar_key(vintage: int, ident: str) -> None:
    key = {"vintage": vintage, "id": ident}
    assert decode_cursor(encode_cursor(key), fields=FIELDS) == key


def test_none_is_the_first_page() -> None:
    assert decode_cursor(None, fields=FIELDS) is None


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "a",  # not a whole base64 quantum
        "!!!not-base64!!!",
        "%%%",
        _raw("just a string"),
        _raw([2024, "x"]),
        _raw(42),
        _raw(None),
        _raw({"vintage": 2024}),  # a field missing
        _raw({"vintage": 2024, "id": "x", "extra": 1}),  # a field too many
        _raw({"year": 2024, "id": "x"}),  # another list's cursor
        _raw({"vintage": 2024.5, "id": "x"}),
        _raw({"vintage": True, "id": "x"}),
        _raw({"vintage": None, "id": "x"}),
        _raw({"vintage": [2024], "id": "x"}),
        _raw({"vintage": {"$gt": 0}, "id": "x"}),
        base64.urlsafe_b64encode(b"\xff\xfe\x00garbage").decode(),
        base64.urlsafe_b64encode(b'{"vintage": 2024, "id": "x"').decode(),  # truncated JSON
        encode_cursor({"vintage": 2024, "id": "x"})[:-3],  # tampered (cut)
        "caf\u00e9",
    ],
)
def test_foreign_or_tampered_cursors_are_400(cursor: str) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_cursor(cursor, fields=FIELDS)
    assert caught.value.status == 400
    assert caught.value.slug == "invalid-cursor"


@settings(max_examples=50, deadline=None)
@given(cursor=st.text(max_size=64))
def test_any_string_is_a_key_or_a_400(cursor: str) -> None:
    """Never a 500: whatever a client sends as cursor decodes to a valid key or is refused as invalid."""
    try:
        key = decode_cursor(cursor, fields=FIELDS)
    except BadRequest as exc:
        assert exc.slug == "invalid-cursor"
    else:
        assert key is not None and sorted(key) == sorted(FIELDS)


def _rows(n: int) -> list[dict[str, Any]]:
    return [{"vintage": 2020 + i, "id": f"row-{i}"} for i in range(n)]


def _key(row: dict[str, Any]) -> dict[str, Any]:
    return {"vintage": row["vintage"], "id": row["id"]}


def test_page_with_more_rows_has_a_cursor_to_the_last_item() -> None:
    page = page_of(_rows(4), limit=3, key=_key)  # fetched limit + 1 rows: another page exists
    assert page.items == _rows(3)
    assert page.next_cursor is not None
    assert decode_cursor(page.next_cursor, fields=FIELDS) == _key(_rows(3)[-1])


@pytest.mark.parametrize("n", [0, 1, 3])
def test_last_page_has_no_cursor(n: int) -> None:
    page = page_of(_rows(n), limit=3, key=_key)
    assert page.items == _rows(n)
    assert page.next_cursor is None


def test_paging_through_everything() -> None:
    """Keyset pages over a sorted list: each row once, in order, and the walk ends."""
    everything = _rows(10)
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(20):
        after = decode_cursor(cursor, fields=FIELDS)
        remaining = [
            r
            for r in everything
            if after is None or (r["vintage"], r["id"]) > (after["vintage"], after["id"])
        ]
        page = page_of(remaining[:4], limit=3, key=_key)
        seen.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == everything
