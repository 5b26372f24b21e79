"""The ITMO unique identifier (domain §4; 6/CMA.4 annex I para 5).

`{CA id}-{originating registry id}-{first transferring Party}-{serial}-{vintage}`, e.g.
`CA0012-GHA01-GHA-150001-2024`. Parsing accepts what the public AEF syntax checker accepts (domain §4.1),
including thousands separators in the serial (`150,001`); the canonical form written everywhere has none.

The serial is a positive 64-bit integer (DESIGN §2) and the vintage a year from 2021 (2/CMA.3 annex para 1).
Every element is checked, so a `UniqueId` that exists is valid; failures raise `InvalidUniqueId`, a
`ValueError`, so pydantic reports it as an ordinary validation error.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

from contracts.parties import validate_ca_id, validate_party_code, validate_registry_id

__all__ = [
    "MAX_SERIAL",
    "MAX_VINTAGE",
    "MIN_VINTAGE",
    "UNIQUE_ID_PATTERN",
    "InvalidUniqueId",
    "UniqueId",
    "UniqueIdStr",
    "format_unique_id",
    "parse_unique_id",
]

MIN_VINTAGE = 2021
MAX_VINTAGE = 9999
MAX_SERIAL = 2**63 - 1

#: The accepted syntax (domain §4.1's checker regex, anchored and ASCII-only). Part checks come on top.
UNIQUE_ID_PATTERN = r"^CA[0-9]{4}-[A-Z]{3}[0-9]{2}-[A-Z]{3}-[1-9][0-9]{0,2}([0-9]*|(,[0-9]{3})*)-[0-9]{4}$"

_EXAMPLE = "CA0012-GHA01-GHA-150001-2024"
_SERIAL_RE = re.compile(r"[1-9][0-9]{0,2}(?:[0-9]*|(?:,[0-9]{3})*)")
_VINTAGE_RE = re.compile(r"[0-9]{4}")


class InvalidUniqueId(ValueError):
    """A string or a set of parts that is not a valid ITMO unique identifier; the message says which part."""


def _check_serial(serial: object) -> int:
    if isinstance(serial, bool) or not isinstance(serial, int):
        raise InvalidUniqueId(f"serial must be an integer, got {serial!r}")
    if not 1 <= serial <= MAX_SERIAL:
        raise InvalidUniqueId(f"serial {serial} out of range: must be from 1 to {MAX_SERIAL}")
    return serial


def _check_vintage(vintage: object) -> int:
    if isinstance(vintage, bool) or not isinstance(vintage, int):
        raise InvalidUniqueId(f"vintage must be an integer year, got {vintage!r}")
    if not MIN_VINTAGE <= vintage <= MAX_VINTAGE:
        raise InvalidUniqueId(
            f"vintage {vintage} out of range: must be a year from {MIN_VINTAGE} to {MAX_VINTAGE}"
        )
    return vintage


def _check_part(check: Callable[[str], str], value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidUniqueId(f"{what} must be a string, got {value!r}")
    try:
        return check(value)
    except ValueError as exc:
        raise InvalidUniqueId(str(exc)) from None


@dataclass(frozen=True, slots=True, order=True)
class UniqueId:
    """One ITMO's identifier; `str()` gives the canonical form. Ordered by (CA, registry, Party, serial, vintage)."""

    ca_id: str
    registry_id: str
    first_transferring_party: str
    serial: int
    vintage: int

    def __post_init__(self) -> None:
        _check_part(validate_ca_id, self.ca_id, "cooperative approach id")
        _check_part(validate_registry_id, self.registry_id, "registry id")
        _check_part(validate_party_code, self.first_transferring_party, "first transferring Party")
        _check_serial(self.serial)
        _check_vintage(self.vintage)

    def __str__(self) -> str:
        return f"{self.ca_id}-{self.registry_id}-{self.first_transferring_party}-{self.serial}-{self.vintage}"

    def with_serial(self, serial: int) -> "UniqueId":
        """The identifier of another unit of the same block invariants (e.g. a block's last unit)."""
        return replace(self, serial=serial)

    @classmethod
    def parse(cls, value: str) -> "UniqueId":
        """Same as `parse_unique_id`."""
        return parse_unique_id(value)


def parse_unique_id(value: str) -> UniqueId:
    """Parse a unique identifier, accepting comma-grouped serials; `InvalidUniqueId` saying what is wrong."""
    if not isinstance(value, str):
        raise InvalidUniqueId(f"a unique identifier must be a string, got {type(value).__name__}")
    parts = value.split("-")
    if len(parts) != 5:
        raise InvalidUniqueId(
            f"{value!r} is not an ITMO unique identifier: expected five parts "
            f"{{CA id}}-{{registry id}}-{{first transferring Party}}-{{serial}}-{{vintage}}, e.g. {_EXAMPLE}"
        )
    ca_id, registry_id, party, serial_text, vintage_text = parts
    if not _SERIAL_RE.fullmatch(serial_text):
        raise InvalidUniqueId(
            f"serial {serial_text!r} in {value!r} is not a positive integer without leading zeros "
            "(digits, optionally grouped by commas in threes, e.g. 150,001)"
        )
    if not _VINTAGE_RE.fullmatch(vintage_text):
        raise InvalidUniqueId(f"vintage {vintage_text!r} in {value!r} is not a four-digit year")
    try:
        return UniqueId(
            ca_id=ca_id,
            registry_id=registry_id,
            first_transferring_party=party,
            serial=int(serial_text.replace(",", "")),
            vintage=int(vintage_text),
        )
    except InvalidUniqueId as exc:
        raise InvalidUniqueId(f"{value!r}: {exc}") from None


def format_unique_id(
    ca_id: str, registry_id: str, first_transferring_party: str, serial: int, vintage: int
) -> str:
    """The canonical string of a unique identifier, after checking every part."""
    return str(UniqueId(ca_id, registry_id, first_transferring_party, serial, vintage))


def _from_instance(value: Any) -> Any:
    return str(value) if isinstance(value, UniqueId) else value


def _normalise(value: str) -> str:
    return str(parse_unique_id(value))


UniqueIdStr = Annotated[
    str,
    BeforeValidator(_from_instance),
    AfterValidator(_normalise),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": UNIQUE_ID_PATTERN,
            "description": (
                "ITMO unique identifier {CA id}-{originating registry id}-{first transferring Party}-"
                "{serial}-{vintage}; a comma-grouped serial is accepted and normalised away"
            ),
            "examples": [_EXAMPLE],
        }
    ),
]
