"""Real databases for tests: a migrated template per service, copied for each test.

PostgreSQL: `CREATE DATABASE ... TEMPLATE` from a template migrated once per session with
`alembic upgrade head` (never `create_all`). SQLite: the template file is copied.
"""

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import asyncpg
from sqlalchemy.engine import make_url

from kit.migrations import upgrade

T = TypeVar("T")

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def _off_loop(work: Callable[[], T]) -> T:
    """Run blocking set-up work (asyncio.run, Alembic) even when called from inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return work()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work).result()


def admin_url() -> str:
    return os.environ.get("REGISTRY_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(_dsn(admin_url()), timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def postgres_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""

    async def probe() -> None:
        connection = await asyncpg.connect(_dsn(admin_url()), timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
    except Exception as exc:  # any failure means "not reachable" and is reported as such
        return f"{type(exc).__name__}: {exc}"
    return None


def _pg_url(name: str) -> str:
    return make_url(admin_url()).set(database=name).render_as_string(hide_password=False)


def _package_slug(package: str) -> str:
    return package.rsplit(".", 1)[-1]


class DatabaseFactory:
    """Creates migrated databases for one test session; drops what it made at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.session_tag = uuid.uuid4().hex[:8]
        self._pg_templates: dict[str, str] = {}
        self._sqlite_templates: dict[str, Path] = {}
        self._pg_created: list[str] = []

    def sqlite(self, package: str, directory: Path) -> str:
        template = self._sqlite_templates.get(package)
        if template is None:
            template = self.workdir / f"template-{_package_slug(package)}.sqlite3"
            _off_loop(lambda: upgrade(package, f"sqlite+aiosqlite:///{template}"))
            self._sqlite_templates[package] = template
        target = directory / f"{_package_slug(package)}-{uuid.uuid4().hex[:6]}.sqlite3"
        shutil.copyfile(template, target)
        return f"sqlite+aiosqlite:///{target}"

    def postgres(self, package: str) -> str:
        template = self._pg_templates.get(package)
        if template is None:
            template = f"tpl_{_package_slug(package)}_{self.session_tag}"
            _off_loop(lambda: asyncio.run(_admin(f'CREATE DATABASE "{template}"')))
            self._pg_created.append(template)
            _off_loop(lambda: upgrade(package, _pg_url(template)))
            self._pg_templates[package] = template
        name = f"t_{_package_slug(package)}_{uuid.uuid4().hex[:10]}"
        _off_loop(lambda: asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')))
        self._pg_created.append(name)
        return _pg_url(name)

    def empty_postgres(self, label: str) -> str:
        """A new empty database (migrations are up to the caller, e.g. the launcher)."""
        name = f"smoke_{label}_{uuid.uuid4().hex[:10]}"
        _off_loop(lambda: asyncio.run(_admin(f'CREATE DATABASE "{name}"')))
        self._pg_created.append(name)
        return _pg_url(name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        if name in self._pg_created:
            _off_loop(lambda: asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')))
            self._pg_created.remove(name)

    def close(self) -> None:
        for name in reversed(self._pg_created):
            # Best effort at session end: leftovers carry a random name and .ci/run sweeps them.
            with contextlib.suppress(Exception):
                _off_loop(
                    lambda name=name: asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                )
        self._pg_created.clear()
