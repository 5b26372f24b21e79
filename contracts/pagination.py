"""Cursor pagination envelope: `{"items": [...], "next_cursor": ...}`."""

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Page"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """One page of a list; pass `next_cursor` back as `?cursor=` for the next page (null at the end)."""

    items: list[ItemT]
    next_cursor: str | None = Field(default=None, description="Opaque; null when there is no next page")
