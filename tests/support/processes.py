"""The suite as real processes on free loopback ports, as `make run` starts it."""

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scripts.processes import PROCESSES
from scripts.run import Suite, child_environment


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def suite_environment(data_dir: Path, database_urls: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment: no REGISTRY_* from the caller, free ports, the given databases."""
    import os

    base = {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}
    base["REGISTRY_DATA_DIR"] = str(data_dir)
    base["REGISTRY_ENVIRONMENT"] = "development"
    for process in PROCESSES:
        base[f"{process.env_prefix}PORT"] = str(free_port())
    for name, url in (database_urls or {}).items():
        base[f"REGISTRY_{name.upper()}_DATABASE_URL"] = url
    return child_environment(base)


@contextmanager
def running_suite(data_dir: Path, database_urls: dict[str, str] | None = None) -> Iterator[Suite]:
    """Migrated and started; stopped on exit. Process output goes to data_dir/suite.log."""
    env = suite_environment(data_dir, database_urls)
    with (
        (data_dir / "suite.log").open("wb") as log,
        Suite(env, stdout=log.fileno(), stderr=subprocess.STDOUT) as suite,
    ):
        suite.migrate()
        suite.start()
        yield suite
