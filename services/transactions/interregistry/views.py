"""Response models of this service's inter-registry endpoints that are not IRX wire messages (so they live
here, not in contracts/interregistry.py): the message-log view of `GET /v1/interregistry/messages`."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["MessageLogEntry", "MessageLogPage"]


class MessageLogEntry(BaseModel):
    """One message of the log, both directions, with what its verification used (audit, stage 3)."""

    log_id: int = Field(description="Position in the log; `after` of the next page")
    registry_id: str
    direction: Literal["registry_to_ir", "ir_to_registry"]
    message_id: str
    type: str
    seq: int | None = Field(description="Registry → IR: the registry's seq (null for hello)")
    position: int | None = Field(description="IR → registry: the inbox position")
    envelope: dict[str, Any]
    signature: str | None
    kid: str | None
    key_thumbprint: str | None = Field(description="RFC 7638 thumbprint of the key that verified (or signed)")
    verification: Literal["verified", "unsigned", "ir_signed"]
    body_sha256: str
    response_status: int | None = Field(description="Registry → IR: the HTTP status answered (and replayed)")
    response_body: dict[str, Any] | None
    created_at: datetime


class MessageLogPage(BaseModel):
    items: list[MessageLogEntry]
    next_cursor: str | None = Field(description="`after` for the next page (the last `log_id`), or null")
