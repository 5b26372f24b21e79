"""The event envelope every producer writes to its outbox and serves on its feed (DESIGN §5)."""

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EventEnvelope", "EventPage", "FeedEvent"]


class EventEnvelope(BaseModel):
    """What happened, in one producer, for one Party (or for all when `party` is null)."""

    model_config = ConfigDict(frozen=True)

    id: UUID = Field(description="Unique event id; consumers keep it in their inbox to apply each event once")
    type: str = Field(min_length=1, max_length=100, examples=["party_section.opened"])
    schema_version: int = Field(default=1, ge=1)
    time: datetime = Field(description="When the change committed in the producer (UTC)")
    producer: str = Field(min_length=1, max_length=50, examples=["party_sections"])
    party: str | None = Field(default=None, description="Alpha-3 code of the Party concerned, if one")
    data: dict[str, Any] = Field(default_factory=dict)


class FeedEvent(EventEnvelope):
    """An event as served by a feed: with its position, which only grows in commit order."""

    position: int = Field(ge=1)


class EventPage(BaseModel):
    """A page of a producer's feed (`GET /internal/v1/events?after=N`)."""

    items: list[FeedEvent]
    last_position: int = Field(ge=0, description="Position of the last item, or `after` when empty")
