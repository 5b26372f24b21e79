"""Settings of the ars service (`REGISTRY_*`, `REGISTRY_ARS_*`)."""

from typing import Literal

from pydantic import model_validator

from kit.config import ServiceSettings

__all__ = ["FAILPOINTS", "Settings"]

#: Where `ars_failpoint` may kill the process (crash tests of the first-transfer saga, never production).
FAILPOINTS = ("after_reserve", "after_call")


class Settings(ServiceSettings):
    service_name = "ars"
    port: int = 8103

    #: How often the resumer looks for first transfers left pending (it also runs once at startup).
    saga_resume_seconds: float = 2.0
    #: Backoff between attempts of one pending first transfer: base * 2**attempts, at most the maximum.
    saga_retry_base_seconds: float = 0.5
    saga_retry_max_seconds: float = 60.0
    #: A first transfer proposed to a connected registry: how often the IR is asked whether it was decided.
    saga_registry_poll_seconds: float = 30.0
    #: How long a driver owns a pending operation before the resumer may try it too.
    saga_lease_seconds: float = 15.0
    #: Four-eyes: a first transfer awaiting approval longer than this is cancelled (its MOs released).
    first_transfer_approval_seconds: float = 72 * 3600
    #: Crash tests only: SIGKILL this process at that step of a first transfer.
    ars_failpoint: Literal["after_reserve", "after_call"] | None = None

    @model_validator(mode="after")
    def _no_failpoint_in_production(self) -> "Settings":
        if self.is_production and self.ars_failpoint is not None:
            raise ValueError("REGISTRY_ARS_FAILPOINT is for crash tests and refused in production")
        return self
