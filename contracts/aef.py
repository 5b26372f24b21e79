"""The AEF's five tables as JSON keys (API.md "Reports"; domain §5.2–5.6), in the AEF's column order.

Confidentiality designations (domain §6) name fields as `<table>.<key>`, e.g.
`authorizations.authorized_quantity`; `AEF_FIELDS` is the set of valid names.
"""

from typing import Annotated

from pydantic import AfterValidator

__all__ = ["AEF_COLUMNS", "AEF_FIELDS", "AefField", "validate_aef_field"]

_ACTIONS = (
    "action_date",
    "action_type",
    "action_subtype",
    "cooperative_approach_id",
    "authorization_id",
    "first_transferring_party_id",
    "party_itmo_registry_id",
    "first_id",
    "last_id",
    "underlying_unit_registry_id",
    "first_unit_id",
    "last_unit_id",
    "metric",
    "applicable_gwp_values",
    "applicable_non_ghg_metric",
    "quantity_tco2e",
    "quantity_non_ghg_metric",
    "mitigation_type",
    "vintage",
    "transferring_party_id",
    "acquiring_party_id",
    "purpose_oimp",
    "using_cancelling_party_id",
    "using_cancelling_entity_id",
    "ndc_use_year",
    "consistency_check_result",
    "additional_explanatory_information",
)

AEF_COLUMNS: dict[str, tuple[str, ...]] = {
    "submission": (
        "party",
        "version",
        "reported_year",
        "date_of_submission",
        "review_status_of_the_initial_report",
        "consistency_check_result",
        "first_year_of_the_ndc_implementation_period",
        "last_year_of_the_ndc_implementation_period",
        "reference_to_the_ter_report",
    ),
    "authorizations": (
        "authorization_id",
        "date_of_authorization",
        "cooperative_approach_id",
        "version_of_the_authorization",
        "authorized_quantity",
        "metric",
        "applicable_gwp_values",
        "applicable_non_ghg_metric",
        "sectors",
        "activity_types",
        "purposes_for_authorization",
        "authorized_party_ids",
        "authorized_entity_ids",
        "oimp_authorized_by_the_party",
        "authorized_timeframe",
        "authorization_terms_and_conditions",
        "authorization_documentation",
        "first_transfer_definition_for_oimp",
        "additional_explanatory_information",
    ),
    "actions": _ACTIONS,
    "holdings": _ACTIONS[_ACTIONS.index("cooperative_approach_id") : _ACTIONS.index("vintage") + 1],
    "authorized_entities": (
        "date_of_the_authorization",
        "name",
        "country_of_incorporation",
        "identification_number",
        "cooperative_approach_id",
        "conditions",
        "change_and_revocation_conditions",
        "additional_explanatory_information",
    ),
}

AEF_FIELDS: frozenset[str] = frozenset(
    f"{table}.{key}" for table, keys in AEF_COLUMNS.items() for key in keys
)


def validate_aef_field(value: str) -> str:
    if value not in AEF_FIELDS:
        raise ValueError(
            f"{value!r} is not an AEF field; use <table>.<key>, e.g. authorizations.authorized_quantity"
        )
    return value


AefField = Annotated[str, AfterValidator(validate_aef_field)]
