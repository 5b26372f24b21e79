"""The ITMO unique identifier: parse/format round trips and every refused shape (domain §4)."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from contracts.identifiers import (
    MAX_SERIAL,
    UNIQUE_ID_PATTERN,
    InvalidUniqueId,
    UniqueId,
    UniqueIdStr,
    format_unique_id,
    parse_unique_id,
)
from contracts.parties import all_parties

PARTY_CODES = [party.code for party in all_parties()]

# The checker regex exactly as domain §4.1 quotes it (with `\d`), anchored.
DOMAIN_REGEX = re.compile(r"CA\d{4}-[A-Z]{3}\d{2}-[A-Z]{3}-[1-9]\d{0,2}((\d*)|(,\d{3})*)-\d{4}")

ca_ids = st.integers(0, 9999).map(lambda n: f"CA{n:04d}")
registry_ids = st.tuples(st.sampled_from(PARTY_CODES), st.integers(0, 99)).map(lambda t: f"{t[0]}{t[1]:02d}")
serials = st.integers(1, MAX_SERIAL)
vintages = st.integers(2021, 9999)
unique_ids = st.builds(
    UniqueId,
    ca_id=ca_ids,
    registry_id=registry_ids,
    first_transferring_party=st.sampled_from(PARTY_CODES),
    serial=serials,
    vintage=vintages,
)


def with_commas(uid: UniqueId) -> str:
    return f"{uid.ca_id}-{uid.registry_id}-{uid.first_transferring_party}-{uid.serial:,}-{uid.vintage}"


class Holder(BaseModel):
    unique_id: UniqueIdStr


@given(unique_ids)
def test_parse_of_format_is_identity(uid: UniqueId) -> None:
    assert parse_unique_id(str(uid)) == uid
    assert parse_unique_id(format_unique_id(*_parts(uid))) == uid


@given(unique_ids)
def test_comma_grouped_serials_parse_to_the_canonical_form(uid: UniqueId) -> None:
    text = with_commas(uid)
    assert parse_unique_id(text) == uid
    assert str(parse_unique_id(text)) == str(uid)
    assert "," not in str(uid)


@given(unique_ids)
def test_canonical_form_matches_the_published_regexes(uid: UniqueId) -> None:
    text = str(uid)
    assert DOMAIN_REGEX.fullmatch(text)
    assert re.fullmatch(UNIQUE_ID_PATTERN, text)
    assert DOMAIN_REGEX.fullmatch(with_commas(uid))


@given(unique_ids)
def test_pydantic_type_normalises(uid: UniqueId) -> None:
    assert Holder(unique_id=with_commas(uid)).unique_id == str(uid)
    assert Holder.model_validate({"unique_id": uid}).unique_id == str(uid)


@given(st.text(max_size=40))
def test_anything_accepted_matches_the_domain_regex(text: str) -> None:
    try:
        uid = parse_unique_id(text)
    except InvalidUniqueId:
        return
    assert DOMAIN_REGEX.fullmatch(text)
    assert str(uid) == text.replace(",", "")


def _parts(uid: UniqueId) -> tuple[str, str, str, int, int]:
    return (uid.ca_id, uid.registry_id, uid.first_transferring_party, uid.serial, uid.vintage)


def test_example_from_the_domain() -> None:
    uid = parse_unique_id("CA0012-GHA01-GHA-150,001-2024")
    assert uid == UniqueId("CA0012", "GHA01", "GHA", 150001, 2024)
    assert str(uid) == "CA0012-GHA01-GHA-150001-2024"
    assert uid.with_serial(151000).serial == 151000
    assert UniqueId.parse("CA0012-EUE01-EUE-1-2021").first_transferring_party == "EUE"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("CA12-GHA01-GHA-1-2024", "cooperative approach id"),
        ("XX0012-GHA01-GHA-1-2024", "cooperative approach id"),
        ("CA0012-GHA1-GHA-1-2024", "registry id"),
        ("CA0012-GHA001-GHA-1-2024", "registry id"),
        ("CA0012-QQQ01-GHA-1-2024", "unknown Party code 'QQQ'"),
        ("CA0012-GHA01-QQQ-1-2024", "unknown Party code 'QQQ'"),
        ("CA0012-GHA01-GH-1-2024", "Party code"),
        ("CA0012-GHA01-GHA-1-2020", "vintage 2020"),
        ("CA0012-GHA01-GHA-1-0999", "vintage 999"),
        ("CA0012-GHA01-GHA-1-24", "four-digit year"),
        ("CA0012-GHA01-GHA-0-2024", "serial '0'"),
        ("CA0012-GHA01-GHA-007-2024", "serial '007'"),
        ("CA0012-GHA01-GHA-1500,001-2024", "serial"),
        ("CA0012-GHA01-GHA-150,01-2024", "serial"),
        ("CA0012-GHA01-GHA-1,-2024", "serial"),
        (f"CA0012-GHA01-GHA-{MAX_SERIAL + 1}-2024", "out of range"),
        ("CA0012-GHA01-GHA-1-2024-", "five parts"),
        ("CA0012-GHA01-GHA-1-2024x", "four-digit year"),
        ("CA0012-GHA01-GHA-1-2024 ", "four-digit year"),
        ("CA0012-GHA01-GHA-1-2024\n", "four-digit year"),
        (" CA0012-GHA01-GHA-1-2024", "cooperative approach id"),
        ("ca0012-gha01-gha-1-2024", "cooperative approach id"),
        ("CA0012-gha01-GHA-1-2024", "registry id"),
        ("CA0012-GHA01-gha-1-2024", "Party code"),
        ("CA0012-GHA01-GHA-+1-2024", "serial"),
        ("CA0012-GHA01-GHA-1-\u0662\u0660\u0662\u0664", "four-digit year"),
        ("CA0012-GHA01-GHA-\u0661-2024", "serial"),
        ("", "five parts"),
    ],
)
def test_refused(text: str, fragment: str) -> None:
    with pytest.raises(InvalidUniqueId) as caught:
        parse_unique_id(text)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(ValidationError):
        Holder(unique_id=text)


@pytest.mark.parametrize(
    "parts",
    [
        ("CA12", "GHA01", "GHA", 1, 2024),
        ("CA0012", "ZZZ01", "GHA", 1, 2024),
        ("CA0012", "GHA01", "ZZZ", 1, 2024),
        ("CA0012", "GHA01", "GHA", 0, 2024),
        ("CA0012", "GHA01", "GHA", -5, 2024),
        ("CA0012", "GHA01", "GHA", MAX_SERIAL + 1, 2024),
        ("CA0012", "GHA01", "GHA", 1, 2020),
        ("CA0012", "GHA01", "GHA", 1, 10000),
        ("CA0012", "GHA01", "GHA", True, 2024),
        ("CA0012", "GHA01", "GHA", "1", 2024),
    ],
)
def test_invalid_parts_cannot_be_built(parts: tuple[object, ...]) -> None:
    with pytest.raises(InvalidUniqueId):
        format_unique_id(*parts)  # type: ignore[arg-type]


def test_non_string_refused() -> None:
    with pytest.raises(InvalidUniqueId):
        parse_unique_id(12345)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Holder(unique_id=12345)  # type: ignore[arg-type]


def test_unique_id_is_frozen_and_hashable() -> None:
    uid = UniqueId("CA0012", "GHA01", "GHA", 1, 2024)
    with pytest.raises(AttributeError):
        uid.serial = 2  # type: ignore[misc]
    assert len({uid, parse_unique_id("CA0012-GHA01-GHA-1-2024")}) == 1
