"""Tables of the reporting service: its own metadata (the read model arrives with the AEF work)."""

from sqlalchemy import MetaData
from sqlalchemy.orm import registry
from sqlmodel import SQLModel

__all__ = ["Model", "metadata"]

metadata = MetaData()


class Model(SQLModel, registry=registry(metadata=metadata)):
    """Base of this service's SQLModel tables."""
