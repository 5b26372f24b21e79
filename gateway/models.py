"""Tables of the gateway: the OAuth2 client store, in the gateway's own metadata and database."""

from datetime import datetime

from sqlalchemy import JSON, Column, DateTime, MetaData, String, Table
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

__all__ = ["Model", "OAuthClient", "metadata", "oauth_clients"]

metadata = MetaData()


class Model(SQLModel, registry=registry(metadata=metadata)):
    """Base of the gateway's SQLModel tables."""


class OAuthClient(Model, table=True):
    """An OAuth2 client (RFC 6749 §4.4). Rows are never deleted: revocation is final and kept for audit."""

    __tablename__ = "oauth_clients"

    client_id: str = Field(sa_type=String(64), primary_key=True)
    name: str = Field(sa_type=String(200))
    party: str | None = Field(default=None, sa_type=String(3), index=True)
    roles: list[str] = Field(sa_column=Column(JSON, nullable=False))
    registry_id: str | None = Field(default=None, sa_type=String(5))
    # "hmac-sha256:<hex>" of the secret under REGISTRY_CLIENT_SECRET_KEY; the secret itself is never stored.
    secret_hash: str = Field(sa_type=String(128))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    created_by: str | None = Field(default=None, sa_type=String(64))
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    revoked_by: str | None = Field(default=None, sa_type=String(64))


oauth_clients: Table = metadata.tables["oauth_clients"]  # for Core statements (token, revocation refresh)
