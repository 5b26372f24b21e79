"""Tables of the transactions service: its own metadata, so it never mixes with another service's."""

from sqlalchemy import MetaData
from sqlalchemy.orm import registry
from sqlmodel import SQLModel

from kit.idempotency import idempotency_table
from kit.outbox import outbox_tables

__all__ = ["Model", "idempotency_keys", "metadata", "outbox", "outbox_relay"]

metadata = MetaData()


class Model(SQLModel, registry=registry(metadata=metadata)):
    """Base of this service's SQLModel tables."""


outbox, outbox_relay = outbox_tables(metadata)
idempotency_keys = idempotency_table(metadata)
