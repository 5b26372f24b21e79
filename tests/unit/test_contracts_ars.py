"""The ARS wire models validate every AEF Table 2 field (domain §5.3) and the issuance body (domain A1)."""

from typing import Any

import pytest
from pydantic import ValidationError

from contracts.ars import ActivityType, AuthorizationCreate, IssuanceCreate, MOFirstTransferCreate, Sector

_AUTH: dict[str, Any] = {
    "authorization_id": "GH-AUTH-7",
    "date": "2024-06-01",
    "ca_id": "CA0012",
    "purposes": "NDC and OIMP",
    "sectors": ["Energy generation"],
    "activity_types": ["Solar"],
    "oimp": "CORSIA",
    "first_transfer_definition": "Use or Cancellation",
}
_ISSUE: dict[str, Any] = {
    "ca_id": "CA0012",
    "vintage": 2024,
    "quantity": 10,
    "mitigation_type": "Emission reductions",
    "sector": "Energy generation",
    "activity_type": "Solar",
}


def test_nomenclatures_are_verbatim() -> None:
    assert len(Sector) == 9 and len(ActivityType) == 27
    assert ActivityType("C02 usage")  # the source's digit zero, as CARP accepts it


def test_a_valid_authorization() -> None:
    model = AuthorizationCreate.model_validate(_AUTH)
    assert model.purposes.covers_oimp
    ndc = {k: v for k, v in _AUTH.items() if k not in ("oimp", "first_transfer_definition")} | {
        "purposes": "NDC"
    }
    assert AuthorizationCreate.model_validate(ndc).first_transfer_definition is None


@pytest.mark.parametrize(
    "change",
    [
        {"authorization_id": "GH/AUTH"},  # Table 7: letters, digits, spaces, hyphens
        {"authorization_id": " GH"},
        {"ca_id": "CA12"},
        {"date": "2020-12-31"},
        {"purposes": "NDC and CORSIA"},
        {"metric": "tCO2"},
        {"metric": "non-GHG"},  # needs applicable_non_ghg_metric
        {"applicable_non_ghg_metric": "MWh"},  # GHG has none
        {"sectors": []},
        {"sectors": ["Energy"]},
        {"sectors": ["Energy generation", "Energy generation"]},
        {"activity_types": ["Solar power"]},
        {"authorized_parties": ["GHANA"]},
        {"authorized_entities": ["bad id!"]},
        {"oimp": None},  # purposes covering OIMP need it
        {"first_transfer_definition": None},
        {"first_transfer_definition": "First international transfer"},
        {"timeframe": "2030 - 2021"},
        {"timeframe": "2019 - 2025"},
        {"timeframe": "2021-2030"},
        {"authorized_quantity": 0},
        {"unknown_field": 1},
    ],
)
def test_authorization_fields_are_validated(change: dict[str, Any]) -> None:
    body = {k: v for k, v in ({**_AUTH, **change}).items() if v is not None}
    with pytest.raises(ValidationError):
        AuthorizationCreate.model_validate(body)


def test_ndc_only_has_no_oimp_fields() -> None:
    with pytest.raises(ValidationError):
        AuthorizationCreate.model_validate({**_AUTH, "purposes": "NDC"})


@pytest.mark.parametrize(
    "change",
    [
        {"vintage": 2020},
        {"quantity": 0},
        {"quantity": 2**63},
        {"sector": "Space"},
        {"activity_type": "Co2 usage"},
        {"mitigation_type": "Reductions"},
        {"metric": "non-GHG"},
        {"conversion_factor": "1.5"},  # GHG
        {"underlying": {"registry_id": "GS", "first_unit_id": 1, "last_unit_id": 9}},  # 9 units for 10
    ],
)
def test_issuance_fields_are_validated(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        IssuanceCreate.model_validate({**_ISSUE, **change})


def test_issuance_underlying_is_one_to_one() -> None:
    underlying = {"registry_id": "GS", "first_unit_id": 101, "last_unit_id": 110}
    assert IssuanceCreate.model_validate({**_ISSUE, "underlying": underlying}).underlying is not None


def test_first_transfer_names_one_destination() -> None:
    base = {"authorization_id": "GH-AUTH-7", "quantity": 1}
    with pytest.raises(ValidationError):
        MOFirstTransferCreate.model_validate(base)
    with pytest.raises(ValidationError):
        MOFirstTransferCreate.model_validate(
            {**base, "to_account": "CHE01-100-1", "use": {"purpose": "CORSIA"}}
        )
    assert MOFirstTransferCreate.model_validate({**base, "cancellation": {"purpose": "OP"}}).cancellation
