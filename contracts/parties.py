"""Party codes, Party ITMO registry ids and cooperative approach ids (domain §1, §4.1; nomenclature Tables 1, 9, 28).

A *Party code* here is any code the AEF accepts as a Party identifier: an ISO 3166-1 alpha-3 code known to
`pycountry`, or one of `RESERVED_PARTIES` (the nomenclature lists no values, only "alpha-3 plus exceptionally
reserved codes such as `EUE`"). It is a format and vocabulary check, not a statement about UNFCCC membership.

Party names are pycountry's `name` (e.g. "Bolivia, Plurinational State of"), not its shorter `common_name`:
`name` exists for every entry and is the ISO short name, so the list is uniform and stable across pycountry
releases that add or drop `common_name`.

Validation is ASCII only and exact: lowercase or padded codes are refused rather than normalised, so that one
Party never has two spellings in URLs, tokens and stored rows.
"""

import re
from functools import cache
from typing import Annotated

import pycountry
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "CA_ID_PATTERN",
    "PARTY_CODE_PATTERN",
    "REGISTRY_ID_PATTERN",
    "RESERVED_PARTIES",
    "CooperativeApproachId",
    "Party",
    "PartyCode",
    "RegistryId",
    "all_parties",
    "is_party",
    "party_name",
    "registry_party",
    "validate_ca_id",
    "validate_party_code",
    "validate_registry_id",
]

#: Codes accepted as Parties beyond ISO 3166-1 alpha-3, code → name. `EUE` is how the UNFCCC writes the
#: European Union (a Party to the Paris Agreement with no ISO alpha-3 code).
RESERVED_PARTIES: dict[str, str] = {
    "EUE": "European Union",
}

# `[A-Z]`/`[0-9]` rather than `\w`/`\d`: Python's and Rust's `\d` match non-ASCII digits. The patterns
# document the format in JSON Schema only; the validators enforce it, so that errors can say which part is wrong.
PARTY_CODE_PATTERN = r"^[A-Z]{3}$"
REGISTRY_ID_PATTERN = r"^[A-Z]{3}[0-9]{2}$"
CA_ID_PATTERN = r"^CA[0-9]{4}$"

_PARTY_RE = re.compile(r"[A-Z]{3}")
_REGISTRY_RE = re.compile(r"[A-Z]{3}[0-9]{2}")
_CA_RE = re.compile(r"CA[0-9]{4}")


@cache
def _names() -> dict[str, str]:
    names = {country.alpha_3: country.name for country in pycountry.countries}
    names.update(RESERVED_PARTIES)
    return dict(sorted(names.items()))


def is_party(code: object) -> bool:
    """True when `code` is exactly an accepted Party code (uppercase, no padding)."""
    return isinstance(code, str) and code in _names()


def party_name(code: str) -> str:
    """The name of a Party; `KeyError` for an unknown code."""
    try:
        return _names()[code]
    except KeyError:
        raise KeyError(f"unknown Party code {code!r}") from None


def validate_party_code(value: str) -> str:
    """`value` if it is an accepted Party code, else `ValueError` saying why."""
    if not _PARTY_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Party code: expected three uppercase letters (ISO 3166-1 alpha-3)"
        )
    if not is_party(value):
        raise ValueError(f"unknown Party code {value!r}: not ISO 3166-1 alpha-3 nor a reserved code")
    return value


def validate_registry_id(value: str) -> str:
    """`value` if it is a Party ITMO registry id (`AAA##` with a known Party code), else `ValueError`."""
    if not _REGISTRY_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a registry id: expected a Party code and two digits, e.g. GHA01")
    if not is_party(value[:3]):
        raise ValueError(f"registry id {value!r} names an unknown Party code {value[:3]!r}")
    return value


def validate_ca_id(value: str) -> str:
    """`value` if it is a cooperative approach id (`CA` and four digits), else `ValueError`."""
    if not _CA_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a cooperative approach id: expected CA and four digits, e.g. CA0012"
        )
    return value


def registry_party(registry_id: str) -> str:
    """The Party code a registry id belongs to (`GHA01` → `GHA`); `ValueError` if the id is invalid."""
    return validate_registry_id(registry_id)[:3]


PartyCode = Annotated[
    str,
    AfterValidator(validate_party_code),
    Field(
        json_schema_extra={"pattern": PARTY_CODE_PATTERN},
        description="Party code: ISO 3166-1 alpha-3, or a reserved code such as EUE (European Union)",
        examples=["GHA"],
    ),
]

RegistryId = Annotated[
    str,
    AfterValidator(validate_registry_id),
    Field(
        json_schema_extra={"pattern": REGISTRY_ID_PATTERN},
        description="Party ITMO registry id (nomenclature Table 28): a Party code and two digits",
        examples=["GHA01"],
    ),
]

CooperativeApproachId = Annotated[
    str,
    AfterValidator(validate_ca_id),
    Field(
        json_schema_extra={"pattern": CA_ID_PATTERN},
        description="Cooperative approach id assigned by CARP (nomenclature Table 9): CA and four digits",
        examples=["CA0012"],
    ),
]


class Party(BaseModel):
    """A Party as listed by `GET /v1/parties`."""

    model_config = ConfigDict(frozen=True)

    code: PartyCode
    name: str = Field(description="ISO 3166-1 short name (pycountry `name`)", examples=["Ghana"])


@cache
def _parties() -> tuple[Party, ...]:
    return tuple(Party(code=code, name=name) for code, name in _names().items())


def all_parties() -> list[Party]:
    """Every accepted Party code with its name, sorted by code (a fresh list over cached, frozen items)."""
    return list(_parties())
