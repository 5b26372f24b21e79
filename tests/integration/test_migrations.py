"""Every process's Alembic migrations build exactly its models' schema, and go down and up again.

Sync tests on purpose: Alembic's command API runs the migrations' own event loop (`asyncio.run` in run_env).
"""

import asyncio
import importlib
from collections.abc import Callable
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, String, Table, inspect, pool, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from kit.migrations import alembic_config
from scripts.processes import SERVICES

PACKAGES = [process.package for process in SERVICES] + ["gateway"]


def _metadata(package: str) -> MetaData:
    return importlib.import_module(f"{package}.models").metadata


def _diff(connection: Connection, metadata: MetaData) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, metadata)


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _inspect(url: str, check: Callable[[Connection], Any]) -> Any:
    async def run() -> Any:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(check)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.mark.parametrize("package", PACKAGES)
def test_migrated_schema_matches_the_models(make_database: Callable[[str], str], package: str) -> None:
    url = make_database(package)
    metadata = _metadata(package)
    assert _inspect(url, lambda c: _diff(c, metadata)) == []
    assert _inspect(url, _tables) == set(metadata.tables) | {"alembic_version"}


@pytest.mark.parametrize("package", PACKAGES)
def test_downgrade_to_base_and_upgrade_again(make_database: Callable[[str], str], package: str) -> None:
    url = make_database(package)
    metadata = _metadata(package)
    config = alembic_config(package, url)

    command.downgrade(config, "base")
    assert _inspect(url, _tables) <= {"alembic_version"}

    command.upgrade(config, "head")
    assert _inspect(url, lambda c: _diff(c, metadata)) == []
    assert _inspect(url, _tables) == set(metadata.tables) | {"alembic_version"}
    heads = _inspect(url, lambda c: MigrationContext.configure(c).get_current_heads())
    assert len(heads) == 1

    if "outbox_relay" in metadata.tables:  # the relay's single state row is seeded by the migration
        relay = metadata.tables["outbox_relay"]
        rows = _inspect(url, lambda c: c.execute(select(relay.c.id, relay.c.last_position)).all())
        assert [tuple(row) for row in rows] == [(1, 0)]


def test_the_comparison_notices_drift(make_database: Callable[[str], str]) -> None:
    """Guard against a vacuous check: a model the migrations do not build shows up as a difference."""
    url = make_database("services.transactions")
    drifted = MetaData()
    for table in _metadata("services.transactions").tables.values():
        table.to_metadata(drifted)
    drifted.tables["outbox"].append_column(Column("added_in_models_only", String(10)))
    Table("only_in_models", drifted, Column("id", Integer, primary_key=True))
    diff = _inspect(url, lambda c: _diff(c, drifted))
    kinds = {entry[0] if isinstance(entry, tuple) else entry[0][0] for entry in diff}
    assert {"add_column", "add_table"} <= kinds, diff
