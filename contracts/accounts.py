"""IR account types, statuses, ids and the account wire models (API.md "Party sections"; domain §3.1, §3.2).

Account type codes are the integers of nomenclature Table 52(b); the labels are the team's reading of
domain §3.1 (marked [R] there) and may be renamed once the IR Procedure confirms them, the codes may not.

An account id is `{registry_id}-{type_code}-{n}` (e.g. `GHA01-100-1`): it tells at a glance the Party section
and the kind of account, and `n` counts accounts of that type in that section from 1.
"""

import re
from enum import StrEnum
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contracts.parties import PartyCode, registry_party, validate_registry_id

__all__ = [
    "ACCOUNT_ID_PATTERN",
    "ACCOUNT_TYPE_CODES",
    "TERMINAL_ACCOUNT_TYPES",
    "Account",
    "AccountCreate",
    "AccountId",
    "AccountIdParts",
    "AccountStatus",
    "AccountType",
    "format_account_id",
    "parse_account_id",
]


class AccountType(StrEnum):
    """Kind of IR account; `code` is its nomenclature Table 52(b) integer."""

    HOLDING = "holding"
    NDC_USE = "ndc_use"
    OIMP_USE = "oimp_use"
    CANCELLATION = "cancellation"
    OMGE_CANCELLATION = "omge_cancellation"
    MANDATORY_OMGE_CANCELLATION = "mandatory_omge_cancellation"
    ADAPTATION_FUND = "adaptation_fund"

    @property
    def code(self) -> int:
        """The Table 52(b) type code (100, 200, ...)."""
        return ACCOUNT_TYPE_CODES[self]

    @property
    def terminal(self) -> bool:
        """True when units arriving here are consumed for good (every type but holding)."""
        return self in TERMINAL_ACCOUNT_TYPES

    @classmethod
    def from_code(cls, code: int) -> "AccountType":
        """The type of a Table 52(b) code; `ValueError` for an unknown code."""
        for account_type, type_code in ACCOUNT_TYPE_CODES.items():
            if type_code == code:
                return account_type
        raise ValueError(f"unknown account type code {code!r}: expected one of {sorted(_CODE_SET)}")


#: Type → Table 52(b) code.
ACCOUNT_TYPE_CODES: dict[AccountType, int] = {
    AccountType.HOLDING: 100,
    AccountType.NDC_USE: 200,
    AccountType.OIMP_USE: 210,
    AccountType.CANCELLATION: 300,
    AccountType.OMGE_CANCELLATION: 310,
    AccountType.MANDATORY_OMGE_CANCELLATION: 320,
    AccountType.ADAPTATION_FUND: 330,
}
_CODE_SET = frozenset(ACCOUNT_TYPE_CODES.values())

#: Account types whose units never move again (ledger invariant I3); they cannot be a transaction's source.
TERMINAL_ACCOUNT_TYPES: frozenset[AccountType] = frozenset(
    t for t in AccountType if t is not AccountType.HOLDING
)


class AccountStatus(StrEnum):
    """`blocked` refuses outgoing movements until unblocked; `closed` is final and needs a zero balance."""

    OPEN = "open"
    BLOCKED = "blocked"
    CLOSED = "closed"


_TYPE_CODES_RE = "|".join(str(code) for code in sorted(_CODE_SET))
ACCOUNT_ID_PATTERN = rf"^[A-Z]{{3}}[0-9]{{2}}-({_TYPE_CODES_RE})-[1-9][0-9]{{0,17}}$"
_ACCOUNT_ID_RE = re.compile(r"(?P<registry>[A-Z]{3}[0-9]{2})-(?P<code>[0-9]+)-(?P<n>[1-9][0-9]{0,17})")


class AccountIdParts(NamedTuple):
    """The three parts of an account id."""

    registry_id: str
    type: AccountType
    n: int


def parse_account_id(account_id: str) -> AccountIdParts:
    """Split and check an account id; `ValueError` saying what is wrong."""
    match = _ACCOUNT_ID_RE.fullmatch(account_id)
    if match is None:
        raise ValueError(
            f"{account_id!r} is not an account id: expected {{registry id}}-{{type code}}-{{n}}, e.g. GHA01-100-1"
        )
    registry_id = validate_registry_id(match["registry"])
    return AccountIdParts(registry_id, AccountType.from_code(int(match["code"])), int(match["n"]))


def format_account_id(registry_id: str, type_code: int | AccountType, n: int) -> str:
    """`{registry_id}-{type_code}-{n}`, checked; `type_code` may be the code or the `AccountType`."""
    validate_registry_id(registry_id)
    code = type_code.code if isinstance(type_code, AccountType) else AccountType.from_code(type_code).code
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < 10**18:
        raise ValueError(f"account number must be an integer from 1 to 10**18 - 1, got {n!r}")
    return f"{registry_id}-{code}-{n}"


def _check_account_id(value: str) -> str:
    parse_account_id(value)
    return value


AccountId = Annotated[
    str,
    AfterValidator(_check_account_id),
    Field(
        json_schema_extra={"pattern": ACCOUNT_ID_PATTERN},
        description="Account id: `{registry id}-{type code}-{n}`",
        examples=["GHA01-100-1"],
    ),
]

_EntityId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        description="Authorized entity (AEF Table 5) holding the account; null for the Party's own accounts",
        examples=["GHA-ENT-001"],
    ),
]


class Account(BaseModel):
    """An IR account of a Party section."""

    account_id: AccountId
    party: PartyCode
    type: AccountType
    type_code: int = Field(description="Nomenclature Table 52(b) code of `type`", examples=[100])
    name: str = Field(min_length=1, max_length=200, examples=["Ghana holding account"])
    status: AccountStatus
    holder_entity_id: _EntityId | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill_type_code(cls, data: Any) -> Any:
        # Producers may leave out the code; it is a function of `type`, so deriving it avoids a disagreement.
        if isinstance(data, dict) and data.get("type_code") is None and data.get("type") is not None:
            try:
                return {**data, "type_code": AccountType(data["type"]).code}
            except ValueError:
                return data
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "Account":
        if self.type_code != self.type.code:
            raise ValueError(f"type_code {self.type_code} does not match type {self.type.value!r}")
        parts = parse_account_id(self.account_id)
        if parts.type is not self.type:
            raise ValueError(f"account id {self.account_id!r} is not of type {self.type.value!r}")
        if registry_party(parts.registry_id) != self.party:
            raise ValueError(f"account id {self.account_id!r} is not in Party {self.party!r}'s registry")
        return self


class AccountCreate(BaseModel):
    """Body of `POST /v1/party-sections/{party}/accounts`."""

    model_config = ConfigDict(extra="forbid")

    type: AccountType
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] = Field(
        examples=["Entity holding account"]
    )
    holder_entity_id: _EntityId | None = None
