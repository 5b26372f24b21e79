"""Alembic glue: every service keeps its own `migrations/` folder and runs them through these functions.

`upgrade(package, url)` is synchronous (Alembic's API); call it from a thread when an event loop runs.
A service's `migrations/env.py` is two lines: import its metadata and call `run_env(metadata)`.
"""

import asyncio
from importlib import import_module
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

__all__ = ["alembic_config", "run_env", "upgrade"]


def alembic_config(package: str, url: str) -> Config:
    """An Alembic config for the migrations of `package` (e.g. `services.party_sections`) against `url`."""
    module = import_module(package)
    assert module.__file__ is not None
    config = Config()
    config.set_main_option("script_location", str(Path(module.__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["database_url"] = url
    return config


def upgrade(package: str, url: str, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision` with the migrations of `package`."""
    command.upgrade(alembic_config(package, url), revision)


def _run(connection: Connection, metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str, metadata: MetaData) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run, metadata)
    finally:
        await engine.dispose()


def run_env(metadata: MetaData) -> None:
    """The body of every `migrations/env.py` (online mode only: we always migrate a live database)."""
    url = context.config.attributes.get("database_url") or context.config.get_main_option("sqlalchemy.url")
    assert url, "no database URL given to the migrations"
    if url.startswith("sqlite"):
        from pathlib import Path as _Path

        from sqlalchemy.engine import make_url

        database = make_url(url).database
        if database and database != ":memory:":
            _Path(database).parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(_run_async(url, metadata))
