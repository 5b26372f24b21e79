"""Tables of the party_sections service: its own metadata, so it never mixes with another service's."""

from sqlalchemy import MetaData
from sqlalchemy.orm import registry
from sqlmodel import SQLModel

from kit.outbox import outbox_tables

__all__ = ["Model", "metadata", "outbox", "outbox_relay"]

metadata = MetaData()


class Model(SQLModel, registry=registry(metadata=metadata)):
    """Base of this service's SQLModel tables."""


outbox, outbox_relay = outbox_tables(metadata)
