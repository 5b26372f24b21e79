"""Party codes, registry ids and cooperative approach ids (contracts.parties)."""

import pytest
from pydantic import BaseModel, ValidationError

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
from contracts.roles import SECRETARIAT


class Ids(BaseModel):
    party: PartyCode | None = None
    registry_id: RegistryId | None = None
    ca_id: CooperativeApproachId | None = None


def test_ghana() -> None:
    assert party_name("GHA") == "Ghana"
    assert is_party("GHA")
    assert Party(code="GHA", name="Ghana") in all_parties()


def test_reserved_codes_are_parties() -> None:
    assert RESERVED_PARTIES["EUE"] == "European Union"
    for code, name in RESERVED_PARTIES.items():
        assert is_party(code)
        assert party_name(code) == name
        assert Party(code=code, name=name) in all_parties()


def test_list_sorted_unique_and_complete() -> None:
    codes = [party.code for party in all_parties()]
    assert codes == sorted(codes)
    assert len(codes) == len(set(codes))
    assert len(codes) >= 249 + len(RESERVED_PARTIES)
    assert all(is_party(code) for code in codes)


def test_list_is_a_fresh_copy() -> None:
    first = all_parties()
    first.clear()
    assert all_parties()


@pytest.mark.parametrize(
    "code", ["XXX", "QQQ", "gha", "Gha", "GH", "GHAA", " GHA", "GHA ", "", SECRETARIAT, "EU"]
)
def test_unknown_or_misspelt_codes_refused(code: str) -> None:
    assert not is_party(code)
    with pytest.raises(KeyError):
        party_name(code)
    with pytest.raises(ValidationError):
        Ids(party=code)


def test_is_party_of_non_strings() -> None:
    assert not is_party(None)
    assert not is_party(288)


def test_party_code_accepts_valid() -> None:
    assert Ids(party="CHE").party == "CHE"
    assert Ids(party="EUE").party == "EUE"


@pytest.mark.parametrize("registry_id", ["GHA01", "CHE00", "EUE99"])
def test_registry_id_valid(registry_id: str) -> None:
    assert Ids(registry_id=registry_id).registry_id == registry_id
    assert registry_party(registry_id) == registry_id[:3]


@pytest.mark.parametrize(
    "registry_id",
    ["XXX01", "GHA1", "GHA001", "gha01", "GHA0A", "GHA\u0660\u0661", "GHA01\n", "01GHA", "GH01"],
)
def test_registry_id_refused(registry_id: str) -> None:
    with pytest.raises(ValidationError):
        Ids(registry_id=registry_id)
    with pytest.raises(ValueError):
        registry_party(registry_id)


def test_registry_id_with_unknown_party_says_so() -> None:
    with pytest.raises(ValidationError) as caught:
        Ids(registry_id="XXX01")
    assert "unknown Party code 'XXX'" in str(caught.value)


@pytest.mark.parametrize("ca_id", ["CA0012", "CA0000", "CA9999"])
def test_ca_id_valid(ca_id: str) -> None:
    assert Ids(ca_id=ca_id).ca_id == ca_id


@pytest.mark.parametrize("ca_id", ["CA12", "CA00012", "ca0012", "CB0012", "CA001\u0662", "CA0012 "])
def test_ca_id_refused(ca_id: str) -> None:
    with pytest.raises(ValidationError):
        Ids(ca_id=ca_id)


def test_schema_documents_patterns() -> None:
    properties = Ids.model_json_schema()["properties"]
    assert properties["party"]["anyOf"][0]["pattern"] == "^[A-Z]{3}$"
    assert properties["registry_id"]["anyOf"][0]["pattern"] == "^[A-Z]{3}[0-9]{2}$"
    assert properties["ca_id"]["anyOf"][0]["pattern"] == "^CA[0-9]{4}$"
