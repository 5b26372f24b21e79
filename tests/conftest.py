"""Fixtures shared by the whole suite: both database backends, tokens, test settings.

PostgreSQL tests run when a server answers at `REGISTRY_TEST_POSTGRES_URL` (default: postgres on
127.0.0.1:5432); with `REGISTRY_REQUIRE_POSTGRES=1` an unreachable server fails the session instead of
skipping those tests silently.
"""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kit.logging import configure_logging
from tests.support.databases import DatabaseFactory, postgres_reachable
from tests.support.tokens import TokenFactory

os.environ.setdefault("REGISTRY_ENVIRONMENT", "test")
configure_logging("WARNING")

_PG_STATUS: dict[str, str | None] = {}


def _postgres_problem() -> str | None:
    if "problem" not in _PG_STATUS:
        _PG_STATUS["problem"] = postgres_reachable()
    return _PG_STATUS["problem"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("postgres") for item in items):
        return
    problem = _postgres_problem()
    if problem is None:
        return
    if os.environ.get("REGISTRY_REQUIRE_POSTGRES") == "1":
        raise pytest.UsageError(f"REGISTRY_REQUIRE_POSTGRES=1 but PostgreSQL is unreachable: {problem}")
    skip = pytest.mark.skip(reason=f"PostgreSQL unreachable ({problem}); set REGISTRY_TEST_POSTGRES_URL")
    for item in items:
        if item.get_closest_marker("postgres"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("db-templates"))
    yield factory
    factory.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once on SQLite and once on PostgreSQL."""
    return request.param


@pytest.fixture
def make_database(
    backend: str, database_factory: DatabaseFactory, tmp_path: Path
) -> Iterator[Callable[[str], str]]:
    """`make_database("services.party_sections")` → URL of a fresh database migrated to head."""
    made: list[str] = []

    def make(package: str) -> str:
        url = (
            database_factory.postgres(package)
            if backend == "postgres"
            else database_factory.sqlite(package, tmp_path)
        )
        made.append(url)
        return url

    yield make
    for url in made:
        database_factory.drop(url)


@pytest.fixture
def pg_database(database_factory: DatabaseFactory) -> Iterator[Callable[[str], str]]:
    """PostgreSQL only (for tests of PostgreSQL-specific behaviour); mark the test `postgres`."""
    made: list[str] = []

    def make(package: str) -> str:
        url = database_factory.postgres(package)
        made.append(url)
        return url

    yield make
    for url in made:
        database_factory.drop(url)


@pytest.fixture(scope="session")
def tokens() -> TokenFactory:
    return TokenFactory()
