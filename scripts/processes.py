"""The suite's processes in start order: name, package, default port (shared by migrate, run and tests)."""

from dataclasses import dataclass
from importlib import import_module

from kit.config import ServiceSettings

__all__ = ["PROCESSES", "SERVICES", "Process", "by_name"]


@dataclass(frozen=True)
class Process:
    name: str
    package: str
    default_port: int

    @property
    def module(self) -> str:
        return f"{self.package}.main"

    @property
    def env_prefix(self) -> str:
        return f"REGISTRY_{self.name.upper()}_"

    def settings(self) -> ServiceSettings:
        return import_module(f"{self.package}.config").Settings()

    def database_url(self) -> str:
        """This process's database URL from the environment alone.

        Read through the base settings, not the process's own: a migration job needs the database and
        nothing else, so it must not be refused for lacking the gateway's secrets.
        """
        settings_type = type(f"{self.name}_database", (ServiceSettings,), {"service_name": self.name})
        return settings_type().resolved_database_url


PROCESSES: tuple[Process, ...] = (
    Process("gateway", "gateway", 8000),
    Process("party_sections", "services.party_sections", 8101),
    Process("transactions", "services.transactions", 8102),
    Process("ars", "services.ars", 8103),
    Process("reporting", "services.reporting", 8104),
)
SERVICES = PROCESSES[1:]


def by_name(name: str) -> Process:
    for process in PROCESSES:
        if process.name == name:
            return process
    raise KeyError(f"unknown process {name!r}; known: {', '.join(p.name for p in PROCESSES)}")
