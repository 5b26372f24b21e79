"""Keyset cursor pagination: `?limit=&cursor=` in, `{"items", "next_cursor"}` out.

A cursor is the base64url JSON of the sort key of the last item served; it is opaque to clients and
validated on the way back in (a tampered or foreign cursor is a 400 problem, never a 500).
"""

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Query

from contracts.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page
from kit.errors import BadRequest

__all__ = ["CursorQuery", "LimitQuery", "decode_cursor", "encode_cursor", "page_of"]

ItemT = TypeVar("ItemT")

LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")]
CursorQuery = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page; omit for the first")
]
DEFAULT_PAGE_LIMIT = DEFAULT_LIMIT


def encode_cursor(key: dict[str, Any]) -> str:
    raw = json.dumps(key, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str | None, *, fields: Sequence[str]) -> dict[str, Any] | None:
    """The sort key in `cursor`, which must hold exactly `fields` with scalar values."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("The cursor is not one this API issued.", slug="invalid-cursor") from exc
    if not isinstance(key, dict) or sorted(key) != sorted(fields):
        raise BadRequest("The cursor is not one this list issued.", slug="invalid-cursor")
    if not all(isinstance(value, str | int) and not isinstance(value, bool) for value in key.values()):
        raise BadRequest("The cursor is not one this list issued.", slug="invalid-cursor")
    return key


def page_of(rows: Sequence[ItemT], *, limit: int, key: Callable[[ItemT], dict[str, Any]]) -> Page[ItemT]:
    """A page from `rows` fetched with `limit + 1`: the extra row only says another page exists."""
    items = list(rows[:limit])
    next_cursor = encode_cursor(key(items[-1])) if len(rows) > limit and items else None
    return Page[ItemT](items=items, next_cursor=next_cursor)
