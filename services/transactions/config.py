"""Settings of the transactions service (`REGISTRY_*`, `REGISTRY_TRANSACTIONS_*`)."""

import json
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from contracts.interregistry import IrxEnvironment
from kit.config import ServiceSettings

__all__ = ["Settings"]


class Settings(ServiceSettings):
    service_name = "transactions"
    port: int = 8102
    # The ledger's hot path: 16 concurrent transfers and five background loops (journal sealer, outbox and
    # inbox relays, directory follower, sweeps) need more than the default 10; with 10, one transfer in ten
    # opened a new connection (bench/ledger.py, docs/ledger.md "Throughput").
    db_pool_size: int = Field(default=24, ge=1)
    approval_timeout_seconds: float = Field(
        default=72 * 3600, gt=0, description="A transaction awaiting approval longer than this is terminated"
    )
    approval_sweep_seconds: float = Field(
        default=60.0, gt=0, description="How often expired approvals are swept"
    )
    idempotency_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long an Idempotency-Key stays claimed by an attempt that never answered (a crash)"
        " before a retry may take it over",
    )
    directory_cache: bool = Field(
        default=True,
        description="Cache party_sections' account and section lookups, kept by its feed (services/transactions/directory.py)",
    )
    directory_follow_seconds: float = Field(
        default=0.25, gt=0, description="How often the directory cache reads party_sections' feed"
    )
    directory_max_lag_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Cached lookups are used only while the feed was read to its end this recently",
    )
    directory_ttl_seconds: float = Field(default=60.0, gt=0, description="Longest life of a cached lookup")
    irx_environment: IrxEnvironment | None = Field(
        default=None,
        description="IRX env of this IR (INTERREGISTRY §3, 1011): production when REGISTRY_ENVIRONMENT is,"
        " else sandbox",
    )
    irx_signing_key: SecretStr | None = Field(
        default=None, description="The IR's message-signing key: an EC P-256 private JWK (JSON), inline"
    )
    irx_signing_key_file: Path | None = Field(
        default=None, description="The IR's message-signing key: a file with a private JWK (JSON) or a PEM"
    )
    irx_relay_seconds: float = Field(
        default=0.5, gt=0, description="How often the inbox relay looks for unnumbered inbox messages"
    )
    irx_terminator_seconds: float = Field(
        default=60.0, gt=0, description="How often outgoing transfers past respond_by are terminated (6001)"
    )
    irx_jwks_refetch_seconds: float = Field(
        default=60.0,
        gt=0,
        description="An unknown kid refetches a registry's jwks_url at most this often (§2.3: once a minute);"
        " the sandbox tells the conformance kit (GET /v1/interregistry/sandbox/settings)",
    )
    irx_max_clock_skew_seconds: float = Field(
        default=30.0, gt=0, description="A hello reporting more clock skew than this flags the registry"
    )
    irx_sandbox_jwks: str | None = Field(
        default=None,
        description="Production IR: the sandbox IR's public JWKS (JSON, from its /jwks.json), with which it"
        " verifies imported conformance verdicts (POST /v1/interregistry/conformance-runs/import)",
    )

    @field_validator("irx_sandbox_jwks")
    @classmethod
    def _jwks_document(cls, value: str | None) -> str | None:
        # Refused at start rather than at the first import: a typo would otherwise surface as "attestation
        # invalid" on the day a registry goes live.
        if value is None or not value.strip():
            return None
        try:
            document = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"REGISTRY_IRX_SANDBOX_JWKS is not JSON: {exc}") from None
        if (
            not isinstance(document, dict)
            or not isinstance(document.get("keys"), list)
            or not document["keys"]
        ):
            raise ValueError(
                'REGISTRY_IRX_SANDBOX_JWKS must be a JWKS: {"keys": [...]} with at least one key'
            )
        return value

    @property
    def irx_env(self) -> IrxEnvironment:
        """The IRX environment this IR runs (every message's `env` must equal it)."""
        if self.irx_environment is not None:
            return self.irx_environment
        return IrxEnvironment.PRODUCTION if self.is_production else IrxEnvironment.SANDBOX

    @model_validator(mode="after")
    def _one_irx_signing_key(self) -> "Settings":
        # A production IR without a key is refused when the app is built (interregistry/signing.py), not
        # here: the settings of every process must load from the deploy manifests alone.
        if self.irx_signing_key is not None and self.irx_signing_key_file is not None:
            raise ValueError("set REGISTRY_IRX_SIGNING_KEY or REGISTRY_IRX_SIGNING_KEY_FILE, not both")
        return self
