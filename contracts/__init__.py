"""Wire formats of the Article 6.2 registry: pydantic models, enums and identifiers shared by every service.

Nothing here does I/O or knows FastAPI or SQL; services, the gateway and clients import these to speak the
same JSON. One module per concern: `parties` (Party codes, registry and cooperative approach ids),
`accounts`, `actions` (AEF vocabulary and status machines), `identifiers` (the ITMO unique identifier),
`auth` (OAuth2 and clients), `roles`, `problems` (RFC 9457), `pagination`, `events`. This package re-exports
the names most code needs; the modules hold the rest.

Errors: every check raises `ValueError` (so pydantic turns it into a 422 validation error) with a message
that says which part is wrong. The one subclass is `InvalidUniqueId(ValueError)`, raised by
`parse_unique_id`, `format_unique_id` and `UniqueId(...)`. `party_name` raises `KeyError` for an unknown code.
"""

from contracts.accounts import (
    ACCOUNT_TYPE_CODES,
    TERMINAL_ACCOUNT_TYPES,
    Account,
    AccountCreate,
    AccountId,
    AccountStatus,
    AccountType,
    format_account_id,
    parse_account_id,
)
from contracts.actions import (
    ALLOWED_SUBTYPES,
    TERMINAL_BLOCK_STATES,
    TERMINAL_STATUSES,
    ActionSubtype,
    ActionType,
    BlockState,
    FirstTransferDefinition,
    Metric,
    MitigationType,
    MOState,
    Purpose,
    TransactionStatus,
    TransactionType,
    subtype_allowed,
)
from contracts.auth import (
    SECRETARIAT_ROLES,
    AccessTokenClaims,
    Client,
    ClientCreate,
    ClientCreated,
    OAuthError,
    OAuthErrorCode,
    TokenResponse,
    check_client_roles,
)
from contracts.events import EventEnvelope, EventPage, FeedEvent
from contracts.identifiers import InvalidUniqueId, UniqueId, UniqueIdStr, format_unique_id, parse_unique_id
from contracts.pagination import Page
from contracts.parties import (
    RESERVED_PARTIES,
    CooperativeApproachId,
    Party,
    PartyCode,
    RegistryId,
    all_parties,
    is_party,
    party_name,
    registry_party,
)
from contracts.problems import CheckResult, FieldError, Problem, problem_type
from contracts.roles import SECRETARIAT, Role

__all__ = [
    "ACCOUNT_TYPE_CODES",
    "ALLOWED_SUBTYPES",
    "RESERVED_PARTIES",
    "SECRETARIAT",
    "SECRETARIAT_ROLES",
    "TERMINAL_ACCOUNT_TYPES",
    "TERMINAL_BLOCK_STATES",
    "TERMINAL_STATUSES",
    "AccessTokenClaims",
    "Account",
    "AccountCreate",
    "AccountId",
    "AccountStatus",
    "AccountType",
    "ActionSubtype",
    "ActionType",
    "BlockState",
    "CheckResult",
    "Client",
    "ClientCreate",
    "ClientCreated",
    "CooperativeApproachId",
    "EventEnvelope",
    "EventPage",
    "FeedEvent",
    "FieldError",
    "FirstTransferDefinition",
    "InvalidUniqueId",
    "MOState",
    "Metric",
    "MitigationType",
    "OAuthError",
    "OAuthErrorCode",
    "Page",
    "Party",
    "PartyCode",
    "Problem",
    "Purpose",
    "RegistryId",
    "Role",
    "TokenResponse",
    "TransactionStatus",
    "TransactionType",
    "UniqueId",
    "UniqueIdStr",
    "all_parties",
    "check_client_roles",
    "format_account_id",
    "format_unique_id",
    "is_party",
    "parse_account_id",
    "parse_unique_id",
    "party_name",
    "problem_type",
    "registry_party",
    "subtype_allowed",
]
