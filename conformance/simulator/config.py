"""Settings of one simulator process: who it is, where the IR is, and how it (mis)behaves.

`Policy` is the answer policy of §11's driver (`accept`, `silent`, `reject:<code>`). `BUG_MODES` are the
deliberate misbehaviours of the mutation runs (§11) and `CRASH_POINTS` the fault points of the crash matrix
(§13); both are validated here so a typo fails at start, not silently in the middle of a test.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from contracts.interregistry import RECEIVER_REJECTION_CODES

__all__ = ["BUG_MODES", "CRASH_ENV", "CRASH_POINTS", "Policy", "SimulatorConfig"]

#: §11 mutation runs: each breaks one safety rule on purpose; the kit must notice (cases 154, 164, 172, 155, 158).
BUG_MODES: frozenset[str] = frozenset(
    {"spend-before-complete", "release-on-own-timeout", "ignore-seq", "double-apply", "no-return-check"}
)
#: §13 crash matrix: the process exits with 137 (as after SIGKILL) the first time it reaches the point.
CRASH_POINTS: frozenset[str] = frozenset(
    {
        "after_pending_in_commit",
        "after_accept_sent",
        "after_completed_received_before_apply",
        "after_reserve_before_propose",
        "after_propose_before_response",
    }
)
#: Environment variable naming a crash point (the `--crash-at` flag wins).
CRASH_ENV = "SIMULATOR_CRASH_AT"


@dataclass(frozen=True)
class Policy:
    """How the simulator answers a proposal that passed its checks: accept, stay silent, or reject."""

    kind: str  # "accept" | "silent" | "reject"
    code: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Policy":
        text = text.strip()
        if text in ("accept", "silent"):
            return cls(text)
        kind, _, code = text.partition(":")
        if kind == "reject" and code.isdigit() and int(code) in RECEIVER_REJECTION_CODES:
            return cls("reject", int(code))
        raise ValueError(
            f"policy {text!r}: expected accept, silent or reject:<code> with a receiver code (2xxx, 4002–4008, 59xx)"
        )

    def __str__(self) -> str:
        return f"reject:{self.code}" if self.kind == "reject" else self.kind


@dataclass(frozen=True)
class SimulatorConfig:
    registry_id: str
    ir_url: str
    client_id: str
    client_secret: str
    db_path: Path
    port: int = 8210
    host: str = "127.0.0.1"
    env: str = "sandbox"
    policy: Policy = field(default_factory=lambda: Policy("accept"))
    bugs: frozenset[str] = frozenset()
    crash_at: str | None = None
    #: Seconds between inbox polls while idle (§4 says 60 s in production; a simulator wants feedback).
    poll_interval: float = 1.0
    #: How long one send keeps retrying a transport error or 5xx before leaving the message for later.
    retry_seconds: float = 30.0
    #: Backoff bounds of those retries (tenacity's exponential wait).
    retry_initial: float = 0.1
    retry_max: float = 5.0
    http_timeout: float = 10.0

    def __post_init__(self) -> None:
        unknown = set(self.bugs) - BUG_MODES
        if unknown:
            raise ValueError(f"unknown --bug {sorted(unknown)}; known: {sorted(BUG_MODES)}")
        if self.crash_at is not None and self.crash_at not in CRASH_POINTS:
            raise ValueError(f"unknown crash point {self.crash_at!r}; known: {sorted(CRASH_POINTS)}")
        if self.env not in ("sandbox", "production"):
            raise ValueError("env is sandbox or production")

    @property
    def party(self) -> str:
        return self.registry_id[:3]

    @property
    def data_dir(self) -> Path:
        return self.db_path.parent

    @property
    def key_path(self) -> Path:
        return self.data_dir / f"{self.registry_id.lower()}-signing-key.json"

    def bug(self, mode: str) -> bool:
        return mode in self.bugs

    @staticmethod
    def crash_from_env() -> str | None:
        return os.environ.get(CRASH_ENV) or None
