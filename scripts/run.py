"""`make run`: migrate, then start the gateway and the four services on loopback; Ctrl-C stops them all.

Each process is a separate `python -m <package>.main`. The gateway starts first (services fetch its token
keys), then the services; the launcher waits for every `/readyz`, prints the gateway URL and the bootstrap
client, and watches the children: if one dies, it stops the others and exits non-zero. `Suite` is the
same machinery for the smoke test and the benchmarks.
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from scripts.processes import PROCESSES, SERVICES, Process

__all__ = ["Suite", "SuiteFailed", "child_environment", "isolated_environment", "main", "running_suite"]

READY_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0


class SuiteFailed(RuntimeError):
    """A process died or never became ready; `.process` names it."""

    def __init__(self, process: str, reason: str) -> None:
        super().__init__(f"{process} {reason}")
        self.process = process


def port_of(process: Process, env: dict[str, str]) -> int:
    return int(env.get(f"{process.env_prefix}PORT", process.default_port))


def _kept_secret(data_dir: Path, name: str) -> str:
    """A development secret: generated once, kept in the data directory (mode 0600)."""
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(32)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def child_environment(base: dict[str, str]) -> dict[str, str]:
    """The environment every child gets: data dir, ports, upstream URLs, the gateway's JWKS URL."""
    env = dict(base)
    data_dir = Path(env.get("REGISTRY_DATA_DIR", "var")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env["REGISTRY_DATA_DIR"] = str(data_dir)
    env.setdefault("REGISTRY_ENVIRONMENT", "development")
    env.setdefault("REGISTRY_BOOTSTRAP_CLIENT_ID", "secretariat-bootstrap")
    if not env.get("REGISTRY_BOOTSTRAP_CLIENT_SECRET"):
        env["REGISTRY_BOOTSTRAP_CLIENT_SECRET"] = _kept_secret(data_dir, "bootstrap-client-secret")
    if not env.get("REGISTRY_SERVICE_CLIENT_SECRET"):
        env["REGISTRY_SERVICE_CLIENT_SECRET"] = _kept_secret(data_dir, "service-client-secret")
    gateway_port = port_of(PROCESSES[0], env)
    env.setdefault("REGISTRY_GATEWAY_URL", f"http://127.0.0.1:{gateway_port}")
    env.setdefault("REGISTRY_JWKS_URL", f"http://127.0.0.1:{gateway_port}/.well-known/jwks.json")
    for service in SERVICES:
        env.setdefault(f"REGISTRY_{service.name.upper()}_URL", f"http://127.0.0.1:{port_of(service, env)}")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Suite:
    """The gateway and the four services as child processes of this one."""

    def __init__(self, env: dict[str, str], *, stdout: int | None = None, stderr: int | None = None) -> None:
        self.env = env
        self.stdout = stdout
        self.stderr = stderr
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{port_of(PROCESSES[0], self.env)}"

    def url_of(self, name: str) -> str:
        process = next(p for p in PROCESSES if p.name == name)
        return f"http://127.0.0.1:{port_of(process, self.env)}"

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "scripts.migrate", "all"],
            env=self.env,
            check=True,
            stdout=self.stdout,
            stderr=self.stderr,
        )

    def start(self, interrupted: Callable[[], bool] = lambda: False) -> None:
        """Start every process, gateway first; SuiteFailed if one dies or is not ready in time."""
        for group in (PROCESSES[:1], SERVICES):
            for process in group:
                self._spawn(process)
            self._wait_ready({p.name: port_of(p, self.env) for p in group}, interrupted)

    def _spawn(self, process: Process) -> None:
        # A session of their own: only the launcher gets the terminal's Ctrl-C, and stops them in order.
        self.children[process.name] = subprocess.Popen(
            [sys.executable, "-m", process.module],
            env=self.env,
            start_new_session=True,
            stdout=self.stdout,
            stderr=self.stderr,
        )

    def restart(self, name: str) -> None:
        """Start an exited child again with the same environment (same port) and wait until it is ready."""
        if self.children[name].poll() is None:
            raise RuntimeError(f"{name} is still running")
        process = next(p for p in PROCESSES if p.name == name)
        self._spawn(process)
        self._wait_ready({name: port_of(process, self.env)}, lambda: False)

    def _wait_ready(self, ports: dict[str, int], interrupted: Callable[[], bool]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        pending = set(ports)
        while pending and not interrupted():
            for name in sorted(pending):
                if self.children[name].poll() is not None:
                    raise SuiteFailed(name, f"exited with {self.children[name].returncode} while starting")
                if _ready(ports[name]):
                    pending.discard(name)
            if time.monotonic() > deadline:
                raise SuiteFailed(sorted(pending)[0], "was not ready in time")
            time.sleep(0.1)

    def dead(self) -> tuple[str, int] | None:
        """The name and exit code of a child that has exited, if any."""
        for name, child in self.children.items():
            if child.poll() is not None:
                return name, child.returncode
        return None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.children[name].send_signal(sig)
        self.children[name].wait()

    def stop(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in self.children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def __enter__(self) -> "Suite":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def isolated_environment(
    data_dir: Path, database_urls: dict[str, str] | None = None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """An environment for a suite beside any other: no REGISTRY_* inherited, free ports, given databases."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}
    base.update(extra or {})
    base["REGISTRY_DATA_DIR"] = str(data_dir)
    base["REGISTRY_ENVIRONMENT"] = "development"
    for process in PROCESSES:
        base[f"{process.env_prefix}PORT"] = str(_free_port())
    for name, url in (database_urls or {}).items():
        base[f"REGISTRY_{name.upper()}_DATABASE_URL"] = url
    return child_environment(base)


@contextmanager
def running_suite(
    data_dir: Path, database_urls: dict[str, str] | None = None, extra: dict[str, str] | None = None
) -> Iterator[Suite]:
    """A migrated, started suite on free ports (smoke tests, benchmarks); output in data_dir/suite.log."""
    env = isolated_environment(data_dir, database_urls, extra)
    with (
        (data_dir / "suite.log").open("wb") as log,
        Suite(env, stdout=log.fileno(), stderr=subprocess.STDOUT) as suite,
    ):
        suite.migrate()
        suite.start()
        yield suite


def main() -> int:
    stopping = {"signal": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stopping["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with Suite(child_environment(dict(os.environ))) as suite:
        print("migrating databases ...", file=sys.stderr, flush=True)
        suite.migrate()
        try:
            suite.start(interrupted=lambda: bool(stopping["signal"]))
        except SuiteFailed as failure:
            print(f"{failure}; stopping all", file=sys.stderr, flush=True)
            return 1
        if not stopping["signal"]:
            print(
                "\nArticle 6.2 registry is up.\n"
                f"  gateway:          {suite.gateway_url}   (API docs: {suite.gateway_url}/docs)\n"
                f"  bootstrap client: {suite.env['REGISTRY_BOOTSTRAP_CLIENT_ID']}\n"
                f"  its secret:       {suite.env['REGISTRY_DATA_DIR']}/bootstrap-client-secret "
                "(unless REGISTRY_BOOTSTRAP_CLIENT_SECRET is set)\n"
                "Ctrl-C stops everything.\n",
                file=sys.stderr,
                flush=True,
            )
        while not stopping["signal"]:
            dead = suite.dead()
            if dead:
                print(f"{dead[0]} exited with {dead[1]}; stopping all", file=sys.stderr, flush=True)
                return dead[1] or 1
            time.sleep(0.2)
        print("stopping ...", file=sys.stderr, flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main())
