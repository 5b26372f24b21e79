"""Canonical JSON in pieces: the streamed encoding is byte for byte the one-shot one, and a frozen version
parses back from chunks cut anywhere (inside a number, a string, a multi-byte character)."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.reporting import frozen
from services.reporting.exports import Pieces, table_pieces
from services.reporting.frozen import canonical_json, document_chunks, frozen_pieces

HEAD = {"party": "GHA", "year": 2025, "version": "1.0"}


def _tables(actions: int) -> dict[str, Any]:
    return {
        "submission": {"party": "GHA", "version": "1.0", "reported_year": 2025, "date_of_submission": None},
        "authorizations": [
            {"authorization_id": "GH-AUTH-7", "authorized_quantity": 1.25, "note": 'Zürich "東京" 😀'}
        ],
        "actions": [
            {"action_type": "First transfer", "first_id": 10 * i + 1, "last_id": 10 * i + 10, "purpose": None}
            for i in range(actions)
        ],
        "holdings": [],
        "authorized_entities": [{"name": "A&B <Ltd>", "conditions": "line\nbreak"}],
    }


async def _batches(rows: list[dict[str, Any]], size: int) -> AsyncIterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


async def _join(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


@pytest.mark.parametrize("actions", [0, 1, 7])
async def test_streamed_encoding_is_the_one_shot_encoding(actions: int) -> None:
    tables = _tables(actions)
    expected = canonical_json({**HEAD, "tables": tables})
    for batch in (1, 3, 100):
        pieces = table_pieces({**tables, "actions": []}, _batches(tables["actions"], batch))
        assert await _join(document_chunks(HEAD, pieces)) == expected
    # Without a Table 3 stream (a frozen version's export path) too.
    assert await _join(document_chunks(HEAD, table_pieces(tables))) == expected


async def _cut(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _collect(pieces: Pieces) -> dict[str, Any]:
    tables: dict[str, Any] = {}
    async for table, rows in pieces:
        if table == "submission":
            tables[table] = rows[0]
        else:
            tables.setdefault(table, []).extend(rows)
    return tables


async def test_a_frozen_version_parses_back_from_chunks_cut_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frozen, "PIECE_ROWS", 2)
    tables = _tables(5)
    data = canonical_json({**HEAD, "tables": tables})
    for size in (1, 2, 3, 5, 7, 64, len(data)):
        head, pieces = await frozen_pieces(_cut(data, size))
        assert head == HEAD
        assert await _collect(pieces) == tables
    # Parsed and encoded again: the same bytes (the public register re-encodes what it strips).
    head, pieces = await frozen_pieces(_cut(data, 3))
    assert await _join(document_chunks(head, pieces)) == data


async def test_pieces_come_in_bounded_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frozen, "PIECE_ROWS", 2)
    data = canonical_json({**HEAD, "tables": _tables(5)})
    _, pieces = await frozen_pieces(_cut(data, 10))
    sizes = [(table, len(rows)) async for table, rows in pieces]
    assert [size for table, size in sizes if table == "actions"] == [2, 2, 1]
    assert ("holdings", 0) in sizes


async def test_a_truncated_version_is_an_error_not_a_short_table() -> None:
    data = canonical_json({**HEAD, "tables": _tables(3)})
    _, pieces = await frozen_pieces(_cut(data[:-40], 16))
    with pytest.raises(ValueError):
        await _collect(pieces)


def test_canonical_json_writes_what_the_standard_library_wrote() -> None:
    """Versions frozen before orjson were written by `json.dumps`: for every value an AEF holds apart from
    floats (strings of any code point, integers up to the serials' 64 bits, null, booleans, nested lists
    and objects in key order) the bytes are the same, so a re-encoded version matches its stored bytes."""
    import json

    every_character = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    document = {
        "text": every_character,
        "one_per_value": list(every_character[:2000]),
        "integers": [0, -1, 2**63 - 1, -(2**63)],
        "others": [None, True, False, [], {}],
        "nested": {"z": 1, "a": {"y": [1, "2"], "b": None}},
    }
    expected = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    assert canonical_json(document) == expected
    assert canonical_json(1.25) == b"1.25"
