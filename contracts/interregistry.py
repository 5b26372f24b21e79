"""Wire formats of the inter-registry protocol IRX 1.0 (INTERREGISTRY.md): envelope, message types and bodies,
registry records, the numbered response-code catalogue and version negotiation.

Two levels of checking, on purpose. The models refuse what is *malformed* (wrong JSON types, unknown fields,
missing members): the IR answers that with 1003 and records nothing. They do **not** refuse what is well
formed but wrong for the ledger (a unique identifier that disagrees with its block, a serial range out of
bounds, a vintage in the future, a value outside a vocabulary): those are recorded rejections with their own
codes (2001–2010, §6 check group 3), so block fields are plain strict strings and integers here and
`structure_codes` turns what is wrong into those codes (2007 and the ledger's own checks stay with the
transactions service). Strict types (no `"1"` for `1`, no `1` for `true`) keep the parsed message equal to
what was signed.

The envelope's `body` stays a JSON object: the signature covers the envelope exactly as sent (kit.jws), so
the receiver verifies the raw document first and only then parses `body` with `MESSAGE_BODIES[type]`.

Codes are data (`CODE_CATALOGUE`), published by `GET /v1/interregistry/codes`; they are never renumbered,
only appended (§7). `version_refusal` and `negotiate_version` implement the major/minor rules of §3.

Errors: validators raise `ValueError` (pydantic turns it into a validation error, i.e. 1003 on the wire);
`parse_version` raises `ValueError`; `parse_envelope` raises `EnvelopeRefused` carrying the code.
"""

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import (
    AnyHttpUrl,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    field_serializer,
    model_validator,
)

from contracts.actions import FirstTransferDefinition, Metric, MitigationType, Purpose
from contracts.ars import AUTHORIZATION_ID_PATTERN
from contracts.identifiers import MAX_SERIAL, MIN_VINTAGE, InvalidUniqueId, parse_unique_id
from contracts.parties import PartyCode, RegistryId, is_party, registry_party

__all__ = [
    "CODE_CATALOGUE",
    "CURRENT_VERSION",
    "FINAL_TRANSFER_STATUSES",
    "INBOX_MESSAGE_TYPES",
    "IR_ADDRESS",
    "MAX_TRANSFER_BLOCKS",
    "MESSAGE_BODIES",
    "NOT_RECORDED_CODES",
    "PROTOCOL",
    "RECEIVER_REJECTION_CODES",
    "REGISTRY_MESSAGE_TYPES",
    "REGISTRY_TRANSITIONS",
    "SUPPORTED_VERSIONS",
    "TRANSFER_ID_PATTERN",
    "UNSIGNED_MESSAGE_TYPES",
    "AuditTrailMessage",
    "AuditTrailTransfer",
    "CodeDefinition",
    "CodeRaiser",
    "EnvelopeRefused",
    "HelloRequest",
    "HelloResponse",
    "InboxAck",
    "InboxAcked",
    "InboxItem",
    "InboxPage",
    "InboxState",
    "IncomingDecisionNote",
    "IrxCode",
    "IrxEnvelope",
    "IrxEnvironment",
    "IrxMessageType",
    "IrxVersionInfo",
    "KeyRevocation",
    "Notice",
    "ReconciliationAuditTrail",
    "ReconciliationBlocks",
    "ReconciliationDiagnosis",
    "ReconciliationDiagnosisKind",
    "ReconciliationKey",
    "ReconciliationRange",
    "ReconciliationRangeKind",
    "ReconciliationRequested",
    "ReconciliationResolve",
    "ReconciliationResult",
    "ReconciliationStage",
    "ReconciliationStart",
    "ReconciliationStatus",
    "ReconciliationTotal",
    "ReconciliationTotals",
    "ReconciliationTransfer",
    "ReconciliationTransferBlock",
    "RegistryActivate",
    "RegistryContact",
    "RegistryCreate",
    "RegistryKey",
    "RegistryKeyPage",
    "RegistryLifecycleNote",
    "RegistryPatch",
    "RegistryPublic",
    "RegistryRecord",
    "RegistryStatus",
    "RegistryStatusChanged",
    "SigningPolicy",
    "SoftwareInfo",
    "TransferBlock",
    "TransferCancel",
    "TransferCode",
    "TransferDecision",
    "TransferDirection",
    "TransferFinal",
    "TransferProposal",
    "TransferResponse",
    "TransferStatus",
    "UnderlyingRange",
    "allowed_message_types",
    "code_definition",
    "negotiate_version",
    "normalise_rejection_codes",
    "parse_envelope",
    "parse_version",
    "problem_slug",
    "structure_codes",
    "version_refusal",
]

PROTOCOL = "irx"
#: The version this code base writes, and every version it reads (`major.minor`).
CURRENT_VERSION = "1.0"
SUPPORTED_VERSIONS: tuple[str, ...] = ("1.0",)
#: `from`/`to` of a message the IR sends or receives as a system (IR section ids go in bodies).
IR_ADDRESS = "IR"
#: `{sending registry id}-{the sender's own id}`, ≤ 64 characters, URL path safe (RFC 3986 unreserved).
TRANSFER_ID_PATTERN = r"^[A-Z]{3}[0-9]{2}-[A-Za-z0-9._~-]{1,58}$"

#: More blocks than this in one transfer is 2009 (the ledger's bound per transaction).
MAX_TRANSFER_BLOCKS = 10_000

_VERSION_RE = re.compile(r"(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})")

Address = Annotated[
    str,
    StringConstraints(pattern=r"^(IR|[A-Z]{3}[0-9]{2})$"),
    Field(description='A registry id (AAA##), or "IR" for the International Registry', examples=["CHE01"]),
]
TransferId = Annotated[
    str,
    StringConstraints(pattern=TRANSFER_ID_PATTERN),
    Field(
        description="Sending registry id, '-', the sender's own id; unique forever",
        examples=["GHA01-tx_01JNX3"],
    ),
]
VersionStr = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{1,4}\.[0-9]{1,4}$"),
    Field(description="major.minor", examples=["1.0"]),
]
_Text = Annotated[StrictStr, StringConstraints(min_length=1, max_length=200)]
_Note = Annotated[StrictStr, StringConstraints(min_length=1, max_length=4000)]
_AccountRef = Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]
_Position = Annotated[StrictInt, Field(ge=0)]
_Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
#: An OAuth2 client id as the gateway issues them (`c_…`, or a configured bootstrap id).
ClientIdRef = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9._~-]{1,64}$"),
    Field(description="OAuth2 client id (gateway `/v1/clients`)", examples=["c_3f9a1b2c4d5e6f70"]),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- versions ----------------------------------------------------------------------------------------------


def parse_version(version: str) -> tuple[int, int]:
    """`"1.0"` → `(1, 0)`; `ValueError` for anything that is not `major.minor` in plain decimal."""
    match = _VERSION_RE.fullmatch(version) if isinstance(version, str) else None
    if match is None:
        raise ValueError(f"{version!r} is not an IRX version: expected major.minor, e.g. 1.0")
    return int(match.group(1)), int(match.group(2))


def version_refusal(version: object, supported: Iterable[str] = SUPPORTED_VERSIONS) -> "IrxCode | None":
    """The refusal code for a message declaring `version`, or None when this side reads it (§3).

    Not `major.minor` → 1003; a major we do not run → 1001; a minor above the highest we run for that
    major → 1002. A lower minor is read: minors only add optional fields and message types.
    """
    try:
        major, minor = parse_version(version)  # type: ignore[arg-type]
    except ValueError:
        return IrxCode.MALFORMED_MESSAGE
    ours = [parse_version(v) for v in supported]
    minors = [m for maj, m in ours if maj == major]
    if not minors:
        return IrxCode.MAJOR_VERSION_UNSUPPORTED
    if minor > max(minors):
        return IrxCode.MINOR_VERSION_ABOVE_OURS
    return None


def negotiate_version(theirs: Iterable[str], ours: Iterable[str] = SUPPORTED_VERSIONS) -> str | None:
    """The highest version both sides read, or None (then `hello` is refused with 1001).

    A side that reads `m.n` reads every `m.k` with k ≤ n, so for each common major the result is the
    lower of the two highest minors; across majors the highest common major wins. Malformed entries in
    `theirs` are ignored (the schema already refused them in `hello`).
    """
    best: dict[int, int] = {}
    for version in ours:
        major, minor = parse_version(version)
        best[major] = max(best.get(major, -1), minor)
    common: list[tuple[int, int]] = []
    their_best: dict[int, int] = {}
    for version in theirs:
        try:
            major, minor = parse_version(version)
        except ValueError:
            continue
        their_best[major] = max(their_best.get(major, -1), minor)
    for major, minor in their_best.items():
        if major in best:
            common.append((major, min(minor, best[major])))
    if not common:
        return None
    major, minor = max(common)
    return f"{major}.{minor}"


class IrxVersionInfo(BaseModel):
    """`GET /v1/interregistry/version`."""

    current: VersionStr = CURRENT_VERSION
    supported: list[VersionStr] = Field(default_factory=lambda: list(SUPPORTED_VERSIONS))
    deprecated: list[VersionStr] = Field(default_factory=list)
    sunset: dict[str, datetime] = Field(default_factory=dict, description="Version → the date it stops")


# ---- the code catalogue (§7) -------------------------------------------------------------------------------


class IrxCode(IntEnum):
    """The numbered response codes of §7. Never renumbered, only appended."""

    MAJOR_VERSION_UNSUPPORTED = 1001
    MINOR_VERSION_ABOVE_OURS = 1002
    MALFORMED_MESSAGE = 1003
    SENDER_MISMATCH = 1004
    SIGNATURE_MISSING = 1005
    SIGNATURE_INVALID = 1006
    STALE_SEQUENCE = 1007
    MESSAGE_ID_REUSED = 1008
    SENT_AT_IN_FUTURE = 1009
    SENT_AT_TOO_OLD = 1010
    WRONG_ADDRESSEE_OR_ENVIRONMENT = 1011
    UNIQUE_ID_INCONSISTENT = 2001
    SERIAL_RANGE_INVALID = 2002
    QUANTITY_MISMATCH = 2003
    BLOCKS_OVERLAP = 2004
    VINTAGE_INVALID = 2005
    VOCABULARY = 2006
    COOPERATIVE_APPROACH_UNKNOWN = 2007
    UNDERLYING_RANGE_INCONSISTENT = 2008
    TOO_MANY_BLOCKS = 2009
    AUTHORIZATION_ID_MALFORMED = 2010
    SENDING_REGISTRY_NOT_ACTIVE = 3001
    RECEIVING_REGISTRY_NOT_ACTIVE = 3002
    SECTION_NOT_OPEN = 3003
    PAIR_FROZEN = 3004
    UNITS_NOT_AVAILABLE = 4001
    UNITS_ALREADY_IN_RECEIVER = 4002
    UNITS_USED_OR_CANCELLED = 4003
    UNITS_LAST_SENT_ELSEWHERE = 4004
    INVARIANTS_DIFFER = 4005
    UNITS_FROZEN = 4006
    TRANSFER_ID_REUSED = 4007
    IR_ORIGIN_NEVER_ISSUED = 4008
    ACCOUNT_DOES_NOT_EXIST = 5902
    ACCOUNT_NOT_ELIGIBLE = 5903
    PARTY_POLICY = 5904
    PARTY_NOT_PARTICIPATING = 5905
    ACCOUNT_CLOSED = 5906
    NOT_AUTHORIZED_FOR_PARTY = 5907
    OTHER_REJECTION = 5999
    TERMINATED = 6001
    CANCELLED = 6002
    TRANSFER_FINAL = 6003
    TRANSFER_UNKNOWN = 6004
    RECONCILIATION_TOTALS_INCONSISTENT = 7001
    RECONCILIATION_BLOCKS_INCONSISTENT = 7002
    RECONCILIATION_AUDIT_TRAILS_DIFFER = 7003
    RECONCILIATION_OPEN = 7004
    RECONCILIATION_ANSWER_MISMATCH = 7005
    RECONCILIATION_NO_ANSWER = 7006


class CodeRaiser(StrEnum):
    """Who raises a code: the IR, the connected registry, or either as receiver."""

    IR = "IR"
    REGISTRY = "registry"
    BOTH = "both"


class CodeDefinition(BaseModel):
    """One entry of `GET /v1/interregistry/codes`; `http_status` is null where the code is never an answer."""

    model_config = ConfigDict(frozen=True)

    code: int = Field(examples=[1006])
    title: str
    raised_by: CodeRaiser
    http_status: int | None = Field(ge=400, le=599)


def _c(code: IrxCode, title: str, raised_by: CodeRaiser, http_status: int | None) -> CodeDefinition:
    return CodeDefinition(code=int(code), title=title, raised_by=raised_by, http_status=http_status)


_IR, _R, _BOTH = CodeRaiser.IR, CodeRaiser.REGISTRY, CodeRaiser.BOTH
_C = IrxCode

#: §7, in code order. 6001/6002 are answered 409 to late answers; 5999 and 7001–7003/7006 are never an
#: HTTP answer of their own (they are stored on a transfer or a reconciliation).
CODE_CATALOGUE: tuple[CodeDefinition, ...] = (
    _c(_C.MAJOR_VERSION_UNSUPPORTED, "major version not supported", _IR, 400),
    _c(_C.MINOR_VERSION_ABOVE_OURS, "minor version above the IR's for that major", _IR, 400),
    _c(
        _C.MALFORMED_MESSAGE,
        "malformed message: schema, unknown field, Idempotency-Key ≠ message_id",
        _BOTH,
        422,
    ),
    _c(
        _C.SENDER_MISMATCH,
        "sender mismatch: from ≠ token's registry, or transferring Party ≠ registry's Party",
        _IR,
        403,
    ),
    _c(_C.SIGNATURE_MISSING, "signature required but missing", _BOTH, 401),
    _c(_C.SIGNATURE_INVALID, "signature invalid, not ES256, bad typ, unknown or revoked kid", _BOTH, 401),
    _c(_C.STALE_SEQUENCE, "stale sequence: seq ≤ last accepted", _IR, 409),
    _c(_C.MESSAGE_ID_REUSED, "message_id reused with a different body", _IR, 422),
    _c(_C.SENT_AT_IN_FUTURE, "sent_at more than 300 s ahead of receiver time", _BOTH, 400),
    _c(_C.SENT_AT_TOO_OLD, "new message with sent_at older than 24 h", _IR, 400),
    _c(_C.WRONG_ADDRESSEE_OR_ENVIRONMENT, "wrong addressee or environment", _BOTH, 400),
    _c(
        _C.UNIQUE_ID_INCONSISTENT,
        "unique identifier malformed or inconsistent with the block fields",
        _BOTH,
        422,
    ),
    _c(_C.SERIAL_RANGE_INVALID, "serial range invalid (first > last, < 1, > 2^63−1)", _BOTH, 422),
    _c(_C.QUANTITY_MISMATCH, "quantity ≠ sum of serial counts", _BOTH, 422),
    _c(_C.BLOCKS_OVERLAP, "blocks overlap within the message", _BOTH, 422),
    _c(_C.VINTAGE_INVALID, "vintage before 2021 or in the future", _BOTH, 422),
    _c(_C.VOCABULARY, "value outside a controlled vocabulary", _BOTH, 422),
    _c(_C.COOPERATIVE_APPROACH_UNKNOWN, "cooperative approach unknown", _BOTH, 422),
    _c(_C.UNDERLYING_RANGE_INCONSISTENT, "underlying-unit range inconsistent with the block", _BOTH, 422),
    _c(_C.TOO_MANY_BLOCKS, "more than 10,000 blocks", _BOTH, 422),
    _c(_C.AUTHORIZATION_ID_MALFORMED, "authorization id malformed (nomenclature Table 7)", _BOTH, 422),
    _c(_C.SENDING_REGISTRY_NOT_ACTIVE, "sending registry not active", _IR, 403),
    _c(_C.RECEIVING_REGISTRY_NOT_ACTIVE, "receiving registry not active, or unresponsive", _IR, 422),
    _c(_C.SECTION_NOT_OPEN, "IR Party section suspended or closed", _IR, 422),
    _c(_C.PAIR_FROZEN, "pair frozen for this CA/vintage by an open reconciliation", _IR, 422),
    _c(_C.UNITS_NOT_AVAILABLE, "units not available in the transferring account", _BOTH, 422),
    _c(
        _C.UNITS_ALREADY_IN_RECEIVER,
        "units already in the receiving registry (held, reserved or pending)",
        _BOTH,
        422,
    ),
    _c(_C.UNITS_USED_OR_CANCELLED, "units used or cancelled in the receiving registry", _BOTH, 422),
    _c(
        _C.UNITS_LAST_SENT_ELSEWHERE,
        "units last transferred out of the receiving registry to another registry",
        _BOTH,
        422,
    ),
    _c(
        _C.INVARIANTS_DIFFER,
        "block invariants differ from the receiver's record of those serials",
        _BOTH,
        422,
    ),
    _c(_C.UNITS_FROZEN, "units frozen by an unresolved reconciliation inconsistency", _BOTH, 422),
    _c(_C.TRANSFER_ID_REUSED, "transfer_id already used with different content", _BOTH, 422),
    _c(_C.IR_ORIGIN_NEVER_ISSUED, "serials claim an IR origin the IR never issued", _IR, 422),
    _c(_C.ACCOUNT_DOES_NOT_EXIST, "acquiring account does not exist (DES 5902)", _BOTH, 422),
    _c(
        _C.ACCOUNT_NOT_ELIGIBLE,
        "acquiring account not eligible: blocked, not a holding account, other metric (DES 5903)",
        _BOTH,
        422,
    ),
    _c(_C.PARTY_POLICY, "inconsistent with the acquiring Party's policy (DES 5904)", _BOTH, 422),
    _c(_C.PARTY_NOT_PARTICIPATING, "a Party does not participate in the cooperative approach", _BOTH, 422),
    _c(_C.ACCOUNT_CLOSED, "acquiring account closed (DES 5906)", _BOTH, 422),
    _c(_C.NOT_AUTHORIZED_FOR_PARTY, "the authorization does not name the acquiring Party", _BOTH, 422),
    _c(_C.OTHER_REJECTION, "other rejection by the receiving registry (reason in message)", _R, None),
    _c(_C.TERMINATED, "terminated: no answer by respond_by", _IR, 409),
    _c(_C.CANCELLED, "cancelled by the transferring side before a decision", _IR, 409),
    _c(_C.TRANSFER_FINAL, "transfer already final; the body carries the final status", _IR, 409),
    _c(_C.TRANSFER_UNKNOWN, "unknown transfer_id", _IR, 404),
    _c(_C.RECONCILIATION_TOTALS_INCONSISTENT, "reconciliation totals inconsistent", _IR, None),
    _c(_C.RECONCILIATION_BLOCKS_INCONSISTENT, "reconciliation unit blocks inconsistent", _IR, None),
    _c(_C.RECONCILIATION_AUDIT_TRAILS_DIFFER, "reconciliation audit trails differ", _IR, None),
    _c(_C.RECONCILIATION_OPEN, "start refused: a reconciliation is open for this registry", _IR, 409),
    _c(
        _C.RECONCILIATION_ANSWER_MISMATCH,
        "answer does not match the reconciliation's stage or cut-off",
        _IR,
        422,
    ),
    _c(_C.RECONCILIATION_NO_ANSWER, "no answer by the stage deadline", _IR, None),
)

_BY_CODE: dict[int, CodeDefinition] = {entry.code: entry for entry in CODE_CATALOGUE}

#: Codes whose refusal stores nothing (§7 "recorded: no"): every 1xxx, 3001, 4007 (the first transfer
#: stands), 6004, 7004, 7005. A retry of such a message is processed afresh.
NOT_RECORDED_CODES: frozenset[IrxCode] = frozenset(
    {code for code in IrxCode if 1000 <= code < 2000}
    | {
        IrxCode.SENDING_REGISTRY_NOT_ACTIVE,
        IrxCode.TRANSFER_ID_REUSED,
        IrxCode.TRANSFER_UNKNOWN,
        IrxCode.RECONCILIATION_OPEN,
        IrxCode.RECONCILIATION_ANSWER_MISMATCH,
    }
)

#: Codes a receiving registry may give in a `reject` (§5): 2xxx, 4002–4008 and 59xx.
RECEIVER_REJECTION_CODES: frozenset[IrxCode] = frozenset(
    code
    for code in IrxCode
    if 2000 <= code < 3000 or IrxCode.UNITS_ALREADY_IN_RECEIVER <= code <= 4008 or 5900 <= code < 6000
)


def code_definition(code: int) -> CodeDefinition:
    """The catalogue entry of `code`; `KeyError` if the code is not in the catalogue."""
    return _BY_CODE[int(code)]


def problem_slug(code: int) -> str:
    """The problem `type` slug the IR answers a code with (§7): message-refused, transfer-rejected,
    transfer-final or reconciliation-refused. `KeyError` for a code outside the catalogue."""
    value = code_definition(code).code
    if value < 2000 or value in (IrxCode.SENDING_REGISTRY_NOT_ACTIVE, IrxCode.TRANSFER_UNKNOWN):
        return "message-refused"
    if value == IrxCode.TRANSFER_FINAL or value in (IrxCode.TERMINATED, IrxCode.CANCELLED):
        return "transfer-final"
    if value >= 7000:
        return "reconciliation-refused"
    return "transfer-rejected"


# ---- the envelope (§3) -------------------------------------------------------------------------------------


class IrxEnvironment(StrEnum):
    """`env` of a message and `environment` of a registry record: a sandbox message never moves real units."""

    SANDBOX = "sandbox"
    PRODUCTION = "production"


class IrxMessageType(StrEnum):
    """`type` of an envelope. Registry → IR types are POSTed; IR → registry types are read from the inbox."""

    HELLO = "hello"
    TRANSFER_PROPOSAL = "transfer.proposal"  # both directions
    TRANSFER_RESPONSE = "transfer.response"
    TRANSFER_CANCEL = "transfer.cancel"
    INBOX_ACK = "inbox.ack"
    RECONCILIATION_START = "reconciliation.start"
    RECONCILIATION_TOTALS = "reconciliation.totals"
    RECONCILIATION_BLOCKS = "reconciliation.blocks"
    RECONCILIATION_AUDIT_TRAIL = "reconciliation.audit_trail"
    TRANSFER_COMPLETED = "transfer.completed"
    TRANSFER_REJECTED = "transfer.rejected"
    TRANSFER_TERMINATED = "transfer.terminated"
    TRANSFER_CANCELLED = "transfer.cancelled"
    RECONCILIATION_REQUESTED = "reconciliation.requested"
    RECONCILIATION_RESULT = "reconciliation.result"
    REGISTRY_STATUS_CHANGED = "registry.status_changed"
    NOTICE = "notice"


_T = IrxMessageType

#: What a registry may POST (its `seq` increases across all of them except `hello`).
REGISTRY_MESSAGE_TYPES: frozenset[IrxMessageType] = frozenset(
    {
        _T.HELLO,
        _T.TRANSFER_PROPOSAL,
        _T.TRANSFER_RESPONSE,
        _T.TRANSFER_CANCEL,
        _T.INBOX_ACK,
        _T.RECONCILIATION_START,
        _T.RECONCILIATION_TOTALS,
        _T.RECONCILIATION_BLOCKS,
        _T.RECONCILIATION_AUDIT_TRAIL,
    }
)
#: What the IR writes to a registry's inbox (§4).
INBOX_MESSAGE_TYPES: frozenset[IrxMessageType] = frozenset(
    {
        _T.TRANSFER_PROPOSAL,
        _T.TRANSFER_COMPLETED,
        _T.TRANSFER_REJECTED,
        _T.TRANSFER_TERMINATED,
        _T.TRANSFER_CANCELLED,
        _T.RECONCILIATION_REQUESTED,
        _T.RECONCILIATION_RESULT,
        _T.REGISTRY_STATUS_CHANGED,
        _T.NOTICE,
    }
)
#: Registry messages that may go unsigned even in production (§2.3).
UNSIGNED_MESSAGE_TYPES: frozenset[IrxMessageType] = frozenset({_T.HELLO})


class EnvelopeRefused(ValueError):
    """A message refused before its content is looked at; `code` is 1001, 1002 or 1003."""

    def __init__(self, code: IrxCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _wire_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class IrxEnvelope(_Strict):
    """Every IRX message, both directions (§3). `from` is spelled `sender` in Python (a keyword).

    `seq` is the registry's increasing sequence number (registry → IR, absent on `hello`) or the inbox
    position (IR → registry). `body` is the JSON object of `MESSAGE_BODIES[type]`, kept as sent.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    protocol: Literal["irx"] = "irx"
    version: VersionStr = CURRENT_VERSION
    env: IrxEnvironment
    message_id: UUID = Field(description="Equals the Idempotency-Key header of the POST")
    type: IrxMessageType
    sender: Address = Field(alias="from")
    to: Address
    seq: StrictInt | None = Field(default=None, ge=1, le=2**63 - 1)
    sent_at: AwareDatetime = Field(description="The sender's clock, informative (skew limits: §3)")
    body: dict[str, Any]

    @field_serializer("sent_at")
    def _sent_at(self, value: datetime) -> str:
        return _wire_time(value)

    @model_validator(mode="after")
    def _coherent(self) -> "IrxEnvelope":
        if self.sender == self.to:
            raise ValueError("from and to must differ")
        if IR_ADDRESS not in (self.sender, self.to):
            raise ValueError('one side of every IRX message is the IR ("IR")')
        if self.type is IrxMessageType.HELLO and self.seq is not None:
            raise ValueError("hello carries no seq")
        if self.type is not IrxMessageType.HELLO and self.seq is None:
            raise ValueError(f"{self.type.value} needs a seq")
        allowed = REGISTRY_MESSAGE_TYPES if self.to == IR_ADDRESS else INBOX_MESSAGE_TYPES
        if self.type not in allowed:
            direction = "to the IR" if self.to == IR_ADDRESS else "from the IR"
            raise ValueError(f"{self.type.value} is not a message type {direction}")
        return self

    def to_wire(self) -> dict[str, Any]:
        """The JSON object to send and to sign: aliases (`from`), no `seq` member when there is none."""
        wire = self.model_dump(mode="json", by_alias=True)
        if wire["seq"] is None:
            del wire["seq"]
        return wire

    def parsed_body(self) -> BaseModel:
        """`body` validated as `MESSAGE_BODIES[type]` (pydantic `ValidationError` when it does not fit)."""
        return MESSAGE_BODIES[self.type].model_validate(self.body)


def parse_envelope(document: object, supported: Iterable[str] = SUPPORTED_VERSIONS) -> IrxEnvelope:
    """Parse a received envelope at its version, body included: `EnvelopeRefused` with 1001/1002/1003.

    The version is judged before the schema (§3 step 2), so a message of an unknown major is 1001 even
    when its fields differ from ours.
    """
    if not isinstance(document, Mapping):
        raise EnvelopeRefused(IrxCode.MALFORMED_MESSAGE, "an IRX message is a JSON object")
    refusal = version_refusal(document.get("version"), supported)
    if refusal is not None:
        raise EnvelopeRefused(refusal, f"version {document.get('version')!r} is not read here")
    try:
        envelope = IrxEnvelope.model_validate(dict(document))
        envelope.parsed_body()
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in exc.errors()
        )
        raise EnvelopeRefused(IrxCode.MALFORMED_MESSAGE, errors) from None
    return envelope


# ---- transfers (§5, §6) ------------------------------------------------------------------------------------


class TransferDirection(StrEnum):
    """Seen from the IR: units leaving it for the registry, or arriving from it."""

    IR_TO_REGISTRY = "ir_to_registry"
    REGISTRY_TO_IR = "registry_to_ir"


class TransferStatus(StrEnum):
    """Status of an inter-registry transfer at the IR (§5 status machine)."""

    PROPOSED = "proposed"
    AWAITING_APPROVAL = "awaiting_approval"
    SENT = "sent"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    REJECTED = "rejected"
    TERMINATED = "terminated"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """A final status F is written once by the IR and never changes (S1)."""
        return self in FINAL_TRANSFER_STATUSES


FINAL_TRANSFER_STATUSES: frozenset[TransferStatus] = frozenset(
    {TransferStatus.COMPLETED, TransferStatus.REJECTED, TransferStatus.TERMINATED, TransferStatus.CANCELLED}
)

_FINAL_MESSAGE_TYPES: dict[TransferStatus, IrxMessageType] = {
    TransferStatus.COMPLETED: IrxMessageType.TRANSFER_COMPLETED,
    TransferStatus.REJECTED: IrxMessageType.TRANSFER_REJECTED,
    TransferStatus.TERMINATED: IrxMessageType.TRANSFER_TERMINATED,
    TransferStatus.CANCELLED: IrxMessageType.TRANSFER_CANCELLED,
}


class UnderlyingRange(_Strict):
    """The underlying registry's units a block maps to, 1:1 and in order; splits by offset (domain §4.3)."""

    registry_id: _Text = Field(examples=["GS"])
    first_unit_id: StrictInt
    last_unit_id: StrictInt


class TransferBlock(_Strict):
    """A serial range with every DESIGN §4 invariant, as a transfer carries it.

    `unique_id_first`/`unique_id_last` are authoritative and must agree with the numeric fields (2001);
    ranges (2002), vintages (2005), vocabularies (2006), the authorization id (2010) and `underlying`
    (2008) are checked by the receiver and rejected with those codes, not refused as malformed.
    """

    unique_id_first: _Text = Field(examples=["CA0012-GHA01-GHA-1-2024"])
    unique_id_last: _Text = Field(examples=["CA0012-GHA01-GHA-400-2024"])
    ca_id: _Text = Field(examples=["CA0012"])
    origin_registry_id: _Text = Field(examples=["GHA01"])
    first_transferring_party: _Text = Field(examples=["GHA"])
    first: StrictInt
    last: StrictInt
    quantity: StrictInt
    vintage: StrictInt
    metric: _Text = Field(examples=["GHG"])
    applicable_gwp_values: _Text | None = None
    applicable_non_ghg_metric: _Text | None = None
    conversion_factor: _Text | None = Field(default=None, description="Non-GHG: t CO2 eq per unit (decimal)")
    mitigation_type: _Text = Field(examples=["Emission reductions"])
    sector: _Text | None = None
    activity_type: _Text | None = None
    authorization_id: _Text = Field(examples=["GH-AUTH-7"])
    authorization_version: StrictInt
    purposes: _Text = Field(examples=["NDC and OIMP"])
    authorized_parties: list[_Text] | None = Field(default=None, description="null: not restricted")
    first_transfer_definition: _Text | None = None
    first_transferred: StrictBool
    underlying: UnderlyingRange | None = None

    @classmethod
    def from_block(cls, block: BaseModel | Mapping[str, Any]) -> "TransferBlock":
        """The transfer view of a ledger block (`contracts.transactions.Block` or its dict): its invariants,
        without state, place or reservation."""
        data = block.model_dump(mode="json") if isinstance(block, BaseModel) else dict(block)
        return cls.model_validate({name: data.get(name) for name in cls.model_fields if name in data})


class TransferProposal(_Strict):
    """Body of `transfer.proposal`, both directions (§5 as the registry reads it, §6 as it sends it).

    `respond_by` is set by the IR on proposals it sends (its clock decides, S7); a registry leaves it out.
    """

    transfer_id: TransferId
    sender_action: Literal["transfer", "first_transfer"] = "transfer"
    transferring_party: _Text = Field(examples=["GHA"])
    from_registry: _Text = Field(examples=["GHA01"])
    from_account: _AccountRef
    acquiring_party: _Text = Field(examples=["CHE"])
    to_registry: _Text = Field(examples=["CHE01"])
    to_account: _AccountRef
    quantity: StrictInt
    respond_by: AwareDatetime | None = None
    note: _Note | None = None
    blocks: list[TransferBlock] = Field(min_length=1)

    @field_serializer("respond_by")
    def _respond_by(self, value: datetime | None) -> str | None:
        return None if value is None else _wire_time(value)


class TransferCode(_Strict):
    """One reason for a rejection or a final status: a catalogue code with a message."""

    code: StrictInt = Field(examples=[5902])
    message: Annotated[StrictStr, StringConstraints(max_length=1000)] = Field(
        examples=["no account CH-100-77"]
    )
    unique_id_first: _Text | None = Field(default=None, description="The block the code is about, if one")


def normalise_rejection_codes(codes: Iterable[TransferCode]) -> list[TransferCode]:
    """A receiver's reject codes as the IR records them: a code outside the receiver ranges (2xxx,
    4002–4008, 59xx) becomes 5999 with the original number kept in `message` (§5)."""
    result: list[TransferCode] = []
    for entry in codes:
        if entry.code in RECEIVER_REJECTION_CODES:
            result.append(entry)
        else:
            message = f"[{entry.code}] {entry.message}"[:1000]
            result.append(entry.model_copy(update={"code": int(IrxCode.OTHER_REJECTION), "message": message}))
    return result


class TransferResponse(_Strict):
    """Body of `transfer.response` (`POST /v1/interregistry/transfers/{transfer_id}/response`)."""

    transfer_id: TransferId
    decision: Literal["accept", "reject"]
    codes: list[TransferCode] = Field(default_factory=list, description="≥ 1 with reject, none with accept")
    registry_transaction_id: _AccountRef | None = None

    @model_validator(mode="after")
    def _codes_follow_decision(self) -> "TransferResponse":
        if self.decision == "reject" and not self.codes:
            raise ValueError("a reject carries at least one code")
        if self.decision == "accept" and self.codes:
            raise ValueError("an accept carries no codes")
        return self


_AUTHORIZATION_ID_RE = re.compile(AUTHORIZATION_ID_PATTERN)
_VOCABULARIES: tuple[tuple[str, frozenset[str]], ...] = (
    ("metric", frozenset(Metric)),
    ("mitigation_type", frozenset(MitigationType)),
    ("purposes", frozenset(Purpose)),
)
_FIRST_TRANSFER_DEFINITIONS = frozenset(FirstTransferDefinition)


def _block_codes(block: TransferBlock, current_year: int) -> list[tuple[IrxCode, str]]:
    found: list[tuple[IrxCode, str]] = []
    range_ok = 1 <= block.first <= block.last <= MAX_SERIAL
    if not range_ok:
        found.append((IrxCode.SERIAL_RANGE_INVALID, f"serial range {block.first}–{block.last} is not valid"))
    for end, text, serial in (
        ("first", block.unique_id_first, block.first),
        ("last", block.unique_id_last, block.last),
    ):
        try:
            parsed = parse_unique_id(text)
        except InvalidUniqueId as exc:
            found.append((IrxCode.UNIQUE_ID_INCONSISTENT, f"unique_id_{end}: {exc}"))
            continue
        expected = (
            block.ca_id,
            block.origin_registry_id,
            block.first_transferring_party,
            serial,
            block.vintage,
        )
        actual = (
            parsed.ca_id,
            parsed.registry_id,
            parsed.first_transferring_party,
            parsed.serial,
            parsed.vintage,
        )
        if actual != expected:
            found.append(
                (IrxCode.UNIQUE_ID_INCONSISTENT, f"unique_id_{end} {text} disagrees with the block fields")
            )
    if range_ok and block.quantity != block.last - block.first + 1:
        found.append(
            (IrxCode.QUANTITY_MISMATCH, f"block quantity {block.quantity} ≠ {block.last - block.first + 1}")
        )
    if not MIN_VINTAGE <= block.vintage <= current_year:
        found.append(
            (IrxCode.VINTAGE_INVALID, f"vintage {block.vintage} is before {MIN_VINTAGE} or in the future")
        )
    for name, vocabulary in _VOCABULARIES:
        if getattr(block, name) not in vocabulary:
            found.append((IrxCode.VOCABULARY, f"{name} {getattr(block, name)!r} is not in its vocabulary"))
    definition = block.first_transfer_definition
    if definition is not None and definition not in _FIRST_TRANSFER_DEFINITIONS:
        found.append(
            (IrxCode.VOCABULARY, f"first_transfer_definition {definition!r} is not in its vocabulary")
        )
    for party in [block.first_transferring_party, *(block.authorized_parties or [])]:
        if not is_party(party):
            found.append((IrxCode.VOCABULARY, f"{party!r} is not a Party code"))
    underlying = block.underlying
    if underlying is not None and (
        not 1 <= underlying.first_unit_id <= underlying.last_unit_id
        or underlying.last_unit_id - underlying.first_unit_id != block.last - block.first
    ):
        found.append(
            (IrxCode.UNDERLYING_RANGE_INCONSISTENT, "the underlying range does not map 1:1 to the block")
        )
    if not _AUTHORIZATION_ID_RE.fullmatch(block.authorization_id) or block.authorization_version < 1:
        found.append(
            (IrxCode.AUTHORIZATION_ID_MALFORMED, f"authorization {block.authorization_id!r} is malformed")
        )
    return found


def structure_codes(proposal: TransferProposal, *, current_year: int) -> list[TransferCode]:
    """The structure check of an incoming proposal (§6 check group 3, codes 2001–2006, 2008–2010), all
    codes collected; empty when the message is well formed for the ledger. 2007 (CA unknown) needs the
    cooperative approach register and is the service's. `current_year` is the receiver's (UTC) year.
    """
    codes: list[TransferCode] = []
    if len(proposal.blocks) > MAX_TRANSFER_BLOCKS:
        codes.append(
            TransferCode(
                code=int(IrxCode.TOO_MANY_BLOCKS),
                message=f"{len(proposal.blocks)} blocks; at most {MAX_TRANSFER_BLOCKS}",
            )
        )
    for party in (proposal.transferring_party, proposal.acquiring_party):
        if not is_party(party):
            codes.append(TransferCode(code=int(IrxCode.VOCABULARY), message=f"{party!r} is not a Party code"))
    ranges: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    total = 0
    for block in proposal.blocks:
        for code, message in _block_codes(block, current_year):
            codes.append(TransferCode(code=int(code), message=message, unique_id_first=block.unique_id_first))
        total += block.quantity
        if 1 <= block.first <= block.last:
            ranges.setdefault((block.ca_id, block.origin_registry_id), []).append(
                (block.first, block.last, block.unique_id_first)
            )
    if total != proposal.quantity:
        codes.append(
            TransferCode(
                code=int(IrxCode.QUANTITY_MISMATCH),
                message=f"quantity {proposal.quantity} ≠ the blocks' total {total}",
            )
        )
    for spans in ranges.values():
        spans.sort()
        reach = 0  # the highest serial covered by the blocks before this one (same CA and origin)
        for first, last, unique_id_first in spans:
            if first <= reach:
                codes.append(
                    TransferCode(
                        code=int(IrxCode.BLOCKS_OVERLAP),
                        message="the block overlaps another block of the message",
                        unique_id_first=unique_id_first,
                    )
                )
            reach = max(reach, last)
    return codes


class TransferDecision(BaseModel):
    """The IR's answer to a response (200) or to an incoming proposal (201/422 problem with these members)."""

    transfer_id: TransferId
    status: TransferStatus
    decided_at: AwareDatetime | None
    codes: list[TransferCode] = Field(default_factory=list)
    ir_transaction_id: str | None = Field(
        default=None, description="Incoming transfers: the ledger transaction"
    )
    respond_by: AwareDatetime | None = Field(
        default=None,
        description="Incoming under manual acceptance (202 `awaiting_approval`): the IR Party decides by then,"
        " else `terminated`",
    )


class TransferCancel(_Strict):
    """Body of `transfer.cancel` (`POST /v1/interregistry/transfers/{transfer_id}/cancel`, sender registry)."""

    transfer_id: TransferId
    reason: _Note | None = None


class TransferFinal(_Strict):
    """Body of the inbox messages announcing F (`transfer.completed|rejected|terminated|cancelled`).

    Self-contained (S5): a registry that lost its `pending_in` rows can apply it from this alone. A
    tombstone (`cancel` of an id the IR never saw, S8) has no blocks and no accounts.
    """

    transfer_id: TransferId
    direction: TransferDirection
    status: TransferStatus
    decided_at: AwareDatetime
    codes: list[TransferCode] = Field(default_factory=list)
    from_registry: _Text | None = None
    from_account: _AccountRef | None = None
    to_registry: _Text | None = None
    to_account: _AccountRef | None = None
    quantity: StrictInt | None = None
    blocks: list[TransferBlock] = Field(default_factory=list)

    @field_serializer("decided_at")
    def _decided_at(self, value: datetime) -> str:
        return _wire_time(value)

    @model_validator(mode="after")
    def _final(self) -> "TransferFinal":
        if not self.status.final:
            raise ValueError(f"{self.status.value} is not a final status")
        return self

    @property
    def message_type(self) -> IrxMessageType:
        """The inbox message type announcing this status."""
        return _FINAL_MESSAGE_TYPES[self.status]


# ---- hello and the inbox (§3, §4) --------------------------------------------------------------------------


class SoftwareInfo(_Strict):
    name: _Text = Field(examples=["national-registry"])
    version: _Text = Field(examples=["4.2.1"])


class HelloRequest(_Strict):
    """Body of `hello` (`POST /v1/interregistry/hello`): start-up, after a restore, connectivity test."""

    supported_versions: list[VersionStr] = Field(min_length=1, max_length=50, examples=[["1.0"]])
    software: SoftwareInfo
    registry_time: AwareDatetime


class InboxState(BaseModel):
    last_position: int = Field(ge=0, description="Highest numbered inbox position (0: empty)")
    acked_position: int = Field(ge=0)


class HelloResponse(BaseModel):
    """200 answer of `hello`: the negotiated version, the clocks, and where to resume."""

    version: VersionStr
    ir_time: datetime
    skew_ms: int = Field(description="registry_time − ir_time in milliseconds; beyond ±30 s is flagged")
    registry_status: "RegistryStatus"
    last_seq_received: int = Field(ge=0, description="Resume seq above this (0: none yet)")
    inbox: InboxState


class InboxItem(BaseModel):
    """One inbox entry: an IR-signed envelope at a consecutive position (from 1)."""

    position: int = Field(ge=1)
    message: IrxEnvelope
    signature: str = Field(
        description="Detached JWS (kit.jws) over the JCS of `message`; the IR always signs"
    )


class InboxPage(BaseModel):
    """`GET /v1/interregistry/inbox?after=&limit=`; `next_cursor` is the last position returned, or null."""

    items: list[InboxItem]
    next_cursor: str | None = None


class InboxAck(_Strict):
    """Body of `inbox.ack` (`POST /v1/interregistry/inbox/ack`): everything up to this position is applied."""

    up_to: _Position


class InboxAcked(BaseModel):
    acked_position: int = Field(ge=0)


class Notice(_Strict):
    """Body of `notice`: free text from the Secretariat (like ITL notices)."""

    notice_id: _Text
    title: _Text
    text: _Note


class RegistryStatusChanged(_Strict):
    """Body of `registry.status_changed`."""

    registry_id: _Text
    status: "RegistryStatus"
    previous_status: "RegistryStatus"
    note: _Note | None = None


# ---- reconciliation (§8) -----------------------------------------------------------------------------------


class ReconciliationStage(StrEnum):
    TOTALS = "totals"
    BLOCKS = "blocks"
    AUDIT_TRAIL = "audit_trail"


class ReconciliationStatus(StrEnum):
    """Status of a reconciliation (ITL codes in `itl_code`; start refused is 7004, no row)."""

    INITIATED = "initiated"
    TOTALS_INCONSISTENT = "totals_inconsistent"
    BLOCKS_INCONSISTENT = "blocks_inconsistent"
    COMPLETED = "completed"
    COMPLETED_WITH_MANUAL_INTERVENTION = "completed_with_manual_intervention"
    FAILED = "failed"

    @property
    def itl_code(self) -> int | None:
        """The ITL reconciliation status code, where the ITL had one."""
        return _ITL_RECONCILIATION_CODES.get(self)

    @property
    def open(self) -> bool:
        """An open reconciliation refuses another start (7004)."""
        return self in (
            ReconciliationStatus.INITIATED,
            ReconciliationStatus.TOTALS_INCONSISTENT,
            ReconciliationStatus.BLOCKS_INCONSISTENT,
        )


_ITL_RECONCILIATION_CODES: dict[ReconciliationStatus, int] = {
    ReconciliationStatus.INITIATED: 1,
    ReconciliationStatus.TOTALS_INCONSISTENT: 3,
    ReconciliationStatus.BLOCKS_INCONSISTENT: 4,
    ReconciliationStatus.COMPLETED: 5,
    ReconciliationStatus.COMPLETED_WITH_MANUAL_INTERVENTION: 6,
}


class ReconciliationKey(_Strict):
    """A totals key of the pair ledger."""

    direction: TransferDirection
    ca_id: _Text
    vintage: StrictInt
    metric: _Text


class ReconciliationRequested(_Strict):
    """Body of `reconciliation.requested` (inbox). `keys` only at stage `blocks`, `transfer_ids` only at
    stage `audit_trail`."""

    reconciliation_id: _Text
    round: StrictInt = Field(default=1, ge=1, le=3)
    stage: ReconciliationStage
    cutoff_position: _Position
    cutoff_seq: _Position
    respond_by: AwareDatetime
    keys: list[ReconciliationKey] | None = None
    transfer_ids: list[TransferId] | None = None

    @model_validator(mode="after")
    def _stage_members(self) -> "ReconciliationRequested":
        if (self.keys is not None) != (self.stage is ReconciliationStage.BLOCKS):
            raise ValueError("keys go with, and only with, the blocks stage")
        if (self.transfer_ids is not None) != (self.stage is ReconciliationStage.AUDIT_TRAIL):
            raise ValueError("transfer_ids go with, and only with, the audit_trail stage")
        return self


class ReconciliationTotal(_Strict):
    direction: TransferDirection
    ca_id: _Text
    vintage: StrictInt
    metric: _Text
    completed_quantity: Annotated[StrictInt, Field(ge=0)]
    completed_transfers: Annotated[StrictInt, Field(ge=0)]


class _FinalCounts(_Strict):
    rejected: Annotated[StrictInt, Field(ge=0)]
    terminated: Annotated[StrictInt, Field(ge=0)]
    cancelled: Annotated[StrictInt, Field(ge=0)]


class ReconciliationTotals(_Strict):
    """Body of `reconciliation.totals` (stage 1 answer). The id repeats the path so the signature covers it."""

    reconciliation_id: _Text
    cutoff_position: _Position
    cutoff_seq: _Position
    totals: list[ReconciliationTotal]
    final_counts: _FinalCounts
    open_transfers: list[TransferId]


class ReconciliationTransferBlock(_Strict):
    unique_id_first: _Text
    unique_id_last: _Text
    quantity: StrictInt


class ReconciliationTransfer(_Strict):
    transfer_id: TransferId
    direction: TransferDirection
    status: TransferStatus
    final_position: _Position | None = None
    blocks: list[ReconciliationTransferBlock]


class ReconciliationBlocks(_Strict):
    """Body of `reconciliation.blocks` (stage 2 answer)."""

    reconciliation_id: _Text
    transfers: list[ReconciliationTransfer]


class AuditTrailMessage(_Strict):
    message_id: UUID
    type: IrxMessageType
    direction: TransferDirection
    seq: _Position | None = None
    position: _Position | None = None
    at: AwareDatetime
    body_sha256: _Sha256


class AuditTrailTransfer(_Strict):
    transfer_id: TransferId
    messages: list[AuditTrailMessage]


class ReconciliationAuditTrail(_Strict):
    """Body of `reconciliation.audit_trail` (stage 3 answer); digests as `kit.jws.audit_digest` computes."""

    reconciliation_id: _Text
    digest_inbox: _Sha256
    digest_sent: _Sha256
    transfers: list[AuditTrailTransfer]


class ReconciliationStart(_Strict):
    """Body of `POST /v1/interregistry/reconciliations` (secretariat_admin, or `reconciliation.start` from the
    registry itself)."""

    registry_id: RegistryId


class ReconciliationRangeKind(StrEnum):
    MISSING_AT_REGISTRY = "missing_at_registry"
    MISSING_AT_IR = "missing_at_ir"
    STATUS_DIFFERS = "status_differs"


class ReconciliationRange(BaseModel):
    """A serial range found inconsistent at stage 2 (frozen at the IR, 4006)."""

    transfer_id: str
    unique_id_first: str
    unique_id_last: str
    kind: ReconciliationRangeKind


class ReconciliationDiagnosisKind(StrEnum):
    FINAL_STATUS_NOT_APPLIED = "final_status_not_applied"
    UNKNOWN_AT_IR = "unknown_at_ir"
    CONFLICTING_RECORD = "conflicting_record"


class ReconciliationDiagnosis(BaseModel):
    """Stage 3's verdict on one inconsistent transfer."""

    transfer_id: str
    diagnosis: ReconciliationDiagnosisKind
    position: int | None = Field(
        default=None, description="final_status_not_applied: the F message's position"
    )
    message_id: UUID | None = Field(default=None, description="The first diverging message, when one")


class ReconciliationResult(BaseModel):
    """Body of `reconciliation.result` (inbox) and the `GET /v1/interregistry/reconciliations/{id}` view."""

    reconciliation_id: str
    registry_id: str
    status: ReconciliationStatus
    round: int = Field(ge=1)
    cutoff_position: int = Field(ge=0)
    cutoff_seq: int = Field(ge=0)
    respond_by: datetime | None = None
    codes: list[TransferCode] = Field(default_factory=list, description="7001–7003, 7006 as they arose")
    inconsistent_keys: list[ReconciliationKey] = Field(default_factory=list)
    inconsistent_ranges: list[ReconciliationRange] = Field(default_factory=list)
    diagnoses: list[ReconciliationDiagnosis] = Field(default_factory=list)


class ReconciliationResolve(_Strict):
    """Body of `POST /v1/interregistry/reconciliations/{id}/resolve` (secretariat_admin)."""

    note: _Note
    compensating_transaction_ids: list[_Text] = Field(default_factory=list)


# ---- registry records (§2.1) -------------------------------------------------------------------------------


class RegistryStatus(StrEnum):
    """Lifecycle of a connected registry: onboarding → testing → active ⇄ suspended → disconnected."""

    ONBOARDING = "onboarding"
    TESTING = "testing"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DISCONNECTED = "disconnected"


class SigningPolicy(StrEnum):
    """Whether the registry's POSTs must be signed; `optional` exists only in the sandbox (§2.3)."""

    REQUIRED = "required"
    OPTIONAL = "optional"


#: Lifecycle action (`POST /v1/interregistry/registries/{id}/<action>`) → (statuses it applies to, result).
REGISTRY_TRANSITIONS: dict[str, tuple[frozenset[RegistryStatus], RegistryStatus]] = {
    "test": (frozenset({RegistryStatus.ONBOARDING}), RegistryStatus.TESTING),
    "activate": (frozenset({RegistryStatus.TESTING}), RegistryStatus.ACTIVE),
    "suspend": (frozenset({RegistryStatus.ACTIVE}), RegistryStatus.SUSPENDED),
    "reactivate": (frozenset({RegistryStatus.SUSPENDED}), RegistryStatus.ACTIVE),
    "disconnect": (
        frozenset(
            {
                RegistryStatus.ONBOARDING,
                RegistryStatus.TESTING,
                RegistryStatus.ACTIVE,
                RegistryStatus.SUSPENDED,
            }
        ),
        RegistryStatus.DISCONNECTED,
    ),
}


def allowed_message_types(status: RegistryStatus, environment: IrxEnvironment) -> frozenset[IrxMessageType]:
    """What a registry in `status` may POST (else 3001).

    Active: everything. Suspended: no new transfers (`transfer.proposal`); answers, cancels, acks and
    reconciliation go on. Onboarding and testing: everything in the sandbox (connectivity and conformance),
    only `hello` in production. Disconnected: nothing.
    """
    if status is RegistryStatus.ACTIVE:
        return REGISTRY_MESSAGE_TYPES
    if status is RegistryStatus.SUSPENDED:
        return REGISTRY_MESSAGE_TYPES - {IrxMessageType.TRANSFER_PROPOSAL}
    if status in (RegistryStatus.ONBOARDING, RegistryStatus.TESTING):
        if environment is IrxEnvironment.SANDBOX:
            return REGISTRY_MESSAGE_TYPES
        return frozenset({IrxMessageType.HELLO})
    return frozenset()


class RegistryContact(_Strict):
    name: _Text
    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
    role: _Text | None = Field(default=None, examples=["operations"])


_RESPONSE_TIMEOUT_DEFAULT = 86_400
_RESPONSE_TIMEOUT_MIN = 3_600
_RESPONSE_TIMEOUT_MAX = 259_200
_SANDBOX_RESPONSE_TIMEOUT_MIN = 60


def _check_jwks_document(jwks: dict[str, Any] | None) -> None:
    if jwks is not None and not isinstance(jwks.get("keys"), list):
        raise ValueError("jwks must be a JWKS document {'keys': [...]}")


def _check_registry_settings(
    environment: IrxEnvironment,
    *,
    signing: SigningPolicy | None,
    jwks_url: AnyHttpUrl | None,
    jwks: dict[str, Any] | None,
    response_timeout_s: int | None,
) -> None:
    if environment is IrxEnvironment.PRODUCTION:
        if signing is SigningPolicy.OPTIONAL:
            raise ValueError("signing is required in production")
        if jwks is not None:
            raise ValueError("inline jwks is for the sandbox; production publishes keys at an HTTPS jwks_url")
        if jwks_url is not None and jwks_url.scheme != "https":
            raise ValueError("a production jwks_url must be HTTPS")
        if response_timeout_s is not None and response_timeout_s < _RESPONSE_TIMEOUT_MIN:
            raise ValueError("response_timeout_s must be from 3600 (1 h) to 259200 (72 h) in production")
    _check_jwks_document(jwks)


class RegistryCreate(_Strict):
    """Body of `POST /v1/interregistry/registries` (secretariat_admin) → 201 with status `onboarding`."""

    registry_id: RegistryId
    party: PartyCode
    name: _Text
    environment: IrxEnvironment
    jwks_url: AnyHttpUrl | None = None
    jwks: dict[str, Any] | None = Field(default=None, description="Sandbox only: the keys inline")
    signing: SigningPolicy = SigningPolicy.REQUIRED
    response_timeout_s: int = Field(
        default=_RESPONSE_TIMEOUT_DEFAULT, ge=_SANDBOX_RESPONSE_TIMEOUT_MIN, le=_RESPONSE_TIMEOUT_MAX
    )
    contacts: list[RegistryContact] = Field(default_factory=list, max_length=20)
    webhook_url: AnyHttpUrl | None = None
    clients: list[ClientIdRef] = Field(
        default_factory=list,
        max_length=20,
        description="OAuth2 clients allowed to speak for the registry (§2.2; others are refused 1004)",
    )

    @model_validator(mode="after")
    def _coherent(self) -> "RegistryCreate":
        if registry_party(self.registry_id) != self.party:
            raise ValueError(f"registry {self.registry_id} does not belong to Party {self.party}")
        _check_registry_settings(
            self.environment,
            signing=self.signing,
            jwks_url=self.jwks_url,
            jwks=self.jwks,
            response_timeout_s=self.response_timeout_s,
        )
        return self


class RegistryPatch(_Strict):
    """Body of `PATCH /v1/interregistry/registries/{id}` (If-Match required). The registry itself may change
    only `jwks_url` and `webhook_url`; the environment-dependent rules of `RegistryCreate` are re-checked by
    the service against the stored record (`check_against`)."""

    name: _Text | None = None
    jwks_url: AnyHttpUrl | None = None
    jwks: dict[str, Any] | None = None
    signing: SigningPolicy | None = None
    response_timeout_s: int | None = Field(
        default=None, ge=_SANDBOX_RESPONSE_TIMEOUT_MIN, le=_RESPONSE_TIMEOUT_MAX
    )
    contacts: list[RegistryContact] | None = Field(default=None, max_length=20)
    webhook_url: AnyHttpUrl | None = None

    #: Fields a registry principal may change on its own record.
    REGISTRY_EDITABLE: ClassVar[frozenset[str]] = frozenset({"jwks_url", "webhook_url"})

    def check_against(self, environment: IrxEnvironment) -> None:
        """`ValueError` when the change is not allowed for a record of `environment`."""
        _check_jwks_document(self.jwks)
        _check_registry_settings(
            environment,
            signing=self.signing,
            jwks_url=self.jwks_url,
            jwks=self.jwks,
            response_timeout_s=self.response_timeout_s,
        )


class RegistryPublic(BaseModel):
    """What any token may read of a registry record."""

    registry_id: RegistryId
    party: PartyCode
    name: str
    status: RegistryStatus


class RegistryRecord(RegistryPublic):
    """A registry record as the Secretariat and the registry itself read it (`ETag` = `version`)."""

    environment: IrxEnvironment
    jwks_url: str | None = None
    jwks: dict[str, Any] | None = None
    signing: SigningPolicy
    response_timeout_s: int
    contacts: list[RegistryContact] = Field(default_factory=list)
    webhook_url: str | None = None
    version: int = Field(ge=1)
    last_seq_received: int = Field(default=0, ge=0)
    clock_skew_ms: int | None = Field(default=None, description="From the last hello; beyond ±30 s flagged")
    clients: list[str] = Field(
        default_factory=list, description="OAuth2 client ids listed for the registry (§2.2; 1004 otherwise)"
    )
    created_at: datetime
    updated_at: datetime


class RegistryLifecycleNote(_Strict):
    """Body of `/test`, `/suspend`, `/reactivate`, `/disconnect`."""

    note: _Note | None = None


class RegistryActivate(_Strict):
    """Body of `/activate`: production activation needs a passing conformance run."""

    conformance_run_id: _Text | None = None
    note: _Note | None = None


class KeyRevocation(_Strict):
    """Body of `POST /v1/interregistry/registries/{id}/keys/{kid}/revoke` (secretariat_admin, §2.3):
    messages signed with the kid are refused (1006) from `revoked_at` on (default: now)."""

    revoked_at: AwareDatetime | None = Field(
        default=None, description="From when (past: a compromise found late; future: a planned retirement)"
    )
    note: _Note = Field(description="Why (kept with the key and in the outbox event)")


class RegistryKey(BaseModel):
    """A signing key of a registry as the IR knows it: verified with (first/last seen), revoked, or both."""

    registry_id: RegistryId
    kid: str
    thumbprint: str | None = Field(description="RFC 7638; null for a kid revoked before any message used it")
    jwk: dict[str, Any] | None
    first_seen: datetime | None
    last_seen: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    revocation_note: str | None


class RegistryKeyPage(BaseModel):
    items: list[RegistryKey]
    next_cursor: str | None = None


class IncomingDecisionNote(_Strict):
    """Optional body of `POST /v1/transactions/{id}/reject`: the acquiring Party's approver declines an
    incoming transfer awaiting approval (§6)."""

    reason: _Note | None = Field(default=None, description="Reject: sent to the registry with code 5904")


HelloResponse.model_rebuild()
RegistryStatusChanged.model_rebuild()

#: Body model of each message type.
MESSAGE_BODIES: dict[IrxMessageType, type[BaseModel]] = {
    IrxMessageType.HELLO: HelloRequest,
    IrxMessageType.TRANSFER_PROPOSAL: TransferProposal,
    IrxMessageType.TRANSFER_RESPONSE: TransferResponse,
    IrxMessageType.TRANSFER_CANCEL: TransferCancel,
    IrxMessageType.INBOX_ACK: InboxAck,
    IrxMessageType.RECONCILIATION_START: ReconciliationStart,
    IrxMessageType.RECONCILIATION_TOTALS: ReconciliationTotals,
    IrxMessageType.RECONCILIATION_BLOCKS: ReconciliationBlocks,
    IrxMessageType.RECONCILIATION_AUDIT_TRAIL: ReconciliationAuditTrail,
    IrxMessageType.TRANSFER_COMPLETED: TransferFinal,
    IrxMessageType.TRANSFER_REJECTED: TransferFinal,
    IrxMessageType.TRANSFER_TERMINATED: TransferFinal,
    IrxMessageType.TRANSFER_CANCELLED: TransferFinal,
    IrxMessageType.RECONCILIATION_REQUESTED: ReconciliationRequested,
    IrxMessageType.RECONCILIATION_RESULT: ReconciliationResult,
    IrxMessageType.REGISTRY_STATUS_CHANGED: RegistryStatusChanged,
    IrxMessageType.NOTICE: Notice,
}
