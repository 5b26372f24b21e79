"""Accounts, AEF vocabulary, status machines and auth models of `contracts`."""

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from contracts.accounts import (
    ACCOUNT_TYPE_CODES,
    TERMINAL_ACCOUNT_TYPES,
    Account,
    AccountCreate,
    AccountStatus,
    AccountType,
    format_account_id,
    parse_account_id,
)
from contracts.actions import (
    ALLOWED_SUBTYPES,
    OIMP_FIRST_TRANSFER_DEFINITIONS,
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
    covers_ndc,
    covers_oimp,
    subtype_allowed,
)
from contracts.auth import (
    AccessTokenClaims,
    Client,
    ClientCreate,
    ClientCreated,
    OAuthError,
    OAuthErrorCode,
    TokenResponse,
    check_client_roles,
)
from contracts.roles import Role

# ---------------------------------------------------------------- accounts


def test_account_type_codes() -> None:
    assert {t.value: t.code for t in AccountType} == {
        "holding": 100,
        "ndc_use": 200,
        "oimp_use": 210,
        "cancellation": 300,
        "omge_cancellation": 310,
        "mandatory_omge_cancellation": 320,
        "adaptation_fund": 330,
    }
    assert set(ACCOUNT_TYPE_CODES) == set(AccountType)
    for account_type in AccountType:
        assert AccountType.from_code(account_type.code) is account_type


@pytest.mark.parametrize("code", [0, 101, 400, -100])
def test_unknown_account_type_code(code: int) -> None:
    with pytest.raises(ValueError, match="unknown account type code"):
        AccountType.from_code(code)


def test_only_holding_is_not_terminal() -> None:
    assert set(TERMINAL_ACCOUNT_TYPES) == set(AccountType) - {AccountType.HOLDING}
    assert not AccountType.HOLDING.terminal
    assert AccountType.NDC_USE.terminal
    assert [s.value for s in AccountStatus] == ["open", "blocked", "closed"]


def test_account_ids() -> None:
    assert format_account_id("GHA01", 100, 1) == "GHA01-100-1"
    assert format_account_id("GHA01", AccountType.OIMP_USE, 12) == "GHA01-210-12"
    parts = parse_account_id("CHE02-330-7")
    assert parts == ("CHE02", AccountType.ADAPTATION_FUND, 7)
    assert parts.registry_id == "CHE02"


@pytest.mark.parametrize(
    ("registry_id", "type_code", "n"),
    [("XXX01", 100, 1), ("GHA1", 100, 1), ("GHA01", 101, 1), ("GHA01", 100, 0), ("GHA01", 100, True)],
)
def test_format_account_id_refuses(registry_id: str, type_code: int, n: int) -> None:
    with pytest.raises(ValueError):
        format_account_id(registry_id, type_code, n)


@pytest.mark.parametrize(
    "account_id", ["GHA01-100-0", "GHA01-101-1", "GHA01-100-01", "XXX01-100-1", "GHA01-100", "gha01-100-1"]
)
def test_parse_account_id_refuses(account_id: str) -> None:
    with pytest.raises(ValueError):
        parse_account_id(account_id)


def _account(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "account_id": "GHA01-100-1",
        "party": "GHA",
        "type": "holding",
        "type_code": 100,
        "name": "Ghana holding",
        "status": "open",
        "holder_entity_id": None,
    }
    data.update(overrides)
    return data


def test_account_round_trip() -> None:
    account = Account.model_validate(_account())
    assert account.model_dump(mode="json") == _account()
    assert Account.model_validate(_account(type_code=None)).type_code == 100


@pytest.mark.parametrize(
    "overrides",
    [
        {"type_code": 200},
        {"type": "ndc_use", "type_code": 200},
        {"party": "CHE"},
        {"account_id": "GHA01-100-0"},
        {"status": "closing"},
        {"name": ""},
    ],
)
def test_account_inconsistent(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Account.model_validate(_account(**overrides))


def test_account_create() -> None:
    body = AccountCreate.model_validate({"type": "holding", "name": "  Entity  "})
    assert body.name == "Entity"
    assert body.holder_entity_id is None
    for bad in [
        {"type": "holding", "name": ""},
        {"type": "holding", "name": "   "},
        {"type": "holding", "name": "x" * 201},
        {"type": "wallet", "name": "x"},
        {"type": "holding", "name": "x", "extra": 1},
        {"type": "holding", "name": "x", "holder_entity_id": ""},
    ]:
        with pytest.raises(ValidationError):
            AccountCreate.model_validate(bad)


# ---------------------------------------------------------------- AEF vocabulary


def test_verbatim_aef_values() -> None:
    assert [t.value for t in ActionType] == [
        "Authorization",
        "First transfer",
        "Transfer",
        "Acquisition",
        "Use",
        "Cancellation",
        "Voluntary Cancellation",
    ]
    assert [s.value for s in ActionSubtype] == [
        "First transfer to another Party",
        "Authorization",
        "Issuance",
        "Use or cancellation",
        "Mandatory transfer to the Adaptation Fund (A6.4 ERs)",
        "Voluntary transfer to the Adaptation Fund (A6.4 ERs)",
        "Mandatory cancellation to deliver OMGE",
        "Voluntary cancellation to deliver OMGE",
        "Other cancellations",
        "Not yet defined",
    ]
    assert [p.value for p in Purpose] == [
        "NDC",
        "OIMP",
        "IMP",
        "OP",
        "NDC and OIMP",
        "NDC and IMP",
        "NDC and OP",
    ]
    assert [d.value for d in FirstTransferDefinition] == [
        "First international transfer",
        "Authorisation",
        "Issuance",
        "Use or Cancellation",
    ]
    assert {d.value for d in OIMP_FIRST_TRANSFER_DEFINITIONS} == {
        "Authorisation",
        "Issuance",
        "Use or Cancellation",
    }
    assert [m.value for m in Metric] == ["GHG", "non-GHG"]
    assert [m.value for m in MitigationType] == [
        "Emission reductions",
        "Removals",
        "Emission reductions and removals",
    ]


def test_every_action_type_has_a_subtype_rule() -> None:
    assert set(ALLOWED_SUBTYPES) == set(ActionType)
    for action_type in (ActionType.AUTHORIZATION, ActionType.ACQUISITION, ActionType.USE):
        assert ALLOWED_SUBTYPES[action_type] == frozenset()


@pytest.mark.parametrize(
    ("action_type", "subtype", "allowed"),
    [
        ("First transfer", "First transfer to another Party", True),
        ("First transfer", "Authorization", True),
        ("First transfer", "Issuance", True),
        ("First transfer", "Use or cancellation", True),
        ("First transfer", "Other cancellations", True),
        ("First transfer", "Voluntary cancellation to deliver OMGE", True),
        ("First transfer", "Not yet defined", True),
        ("First transfer", "Voluntary transfer to the Adaptation Fund (A6.4 ERs)", False),
        ("Transfer", "Mandatory transfer to the Adaptation Fund (A6.4 ERs)", True),
        ("Transfer", "Not yet defined", True),
        ("Transfer", "First transfer to another Party", False),
        ("Transfer", "Other cancellations", False),
        ("Cancellation", "Mandatory cancellation to deliver OMGE", True),
        ("Cancellation", "Other cancellations", True),
        ("Cancellation", "Issuance", False),
        ("Voluntary Cancellation", "Voluntary cancellation to deliver OMGE", True),
        ("Voluntary Cancellation", "Mandatory transfer to the Adaptation Fund (A6.4 ERs)", False),
        ("Authorization", "Authorization", False),
        ("Acquisition", "Not yet defined", False),
        ("Use", "Use or cancellation", False),
        ("Use", None, True),
        ("Authorization", None, True),
        ("First transfer", None, True),
        ("First transfer", "first transfer to another party", False),
        ("Retirement", None, False),
        ("Transfer", "Something else", False),
    ],
)
def test_subtype_allowed(action_type: str, subtype: str | None, allowed: bool) -> None:
    assert subtype_allowed(action_type, subtype) is allowed


@pytest.mark.parametrize(
    ("purpose", "ndc", "oimp", "imp", "op"),
    [
        (Purpose.NDC, True, False, False, False),
        (Purpose.OIMP, False, True, True, True),
        (Purpose.IMP, False, True, True, False),
        (Purpose.OP, False, True, False, True),
        (Purpose.NDC_AND_OIMP, True, True, True, True),
        (Purpose.NDC_AND_IMP, True, True, True, False),
        (Purpose.NDC_AND_OP, True, True, False, True),
    ],
)
def test_purpose_helpers(purpose: Purpose, ndc: bool, oimp: bool, imp: bool, op: bool) -> None:
    assert (purpose.covers_ndc, purpose.covers_oimp, purpose.covers_imp, purpose.covers_op) == (
        ndc,
        oimp,
        imp,
        op,
    )
    assert covers_ndc(purpose.value) is ndc
    assert covers_oimp(purpose.value) is oimp


def test_purpose_helpers_refuse_unknown() -> None:
    with pytest.raises(ValueError):
        covers_ndc("NDC and CORSIA")


def test_status_machines() -> None:
    assert [t.value for t in TransactionType] == [
        "transfer",
        "use_ndc",
        "use_oimp",
        "cancellation",
        "voluntary_cancellation",
        "omge_cancellation",
    ]
    assert {s.value for s in TERMINAL_STATUSES} == {"completed", "rejected", "cancelled", "terminated"}
    assert not TransactionStatus.ACCEPTED.terminal
    assert TransactionStatus.TERMINATED.terminal
    assert {s.value for s in BlockState} == {
        "held",
        "reserved",
        "used_ndc",
        "used_oimp",
        "cancelled",
        "transferred_out",
        "pending_in",
    }
    assert {s.value for s in TERMINAL_BLOCK_STATES} == {"used_ndc", "used_oimp", "cancelled"}
    assert BlockState.CANCELLED.terminal and not BlockState.TRANSFERRED_OUT.terminal
    assert [s.value for s in MOState] == [
        "pending_authorization",
        "authorized",
        "reserved",
        "first_transferred",
        "cancelled",
    ]


# ---------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Secretariat ops", "party": None, "roles": ["secretariat_admin"]},
        {"name": "TER expert", "roles": ["auditor"]},
        {"name": "Secretariat", "party": None, "roles": ["secretariat_admin", "auditor"]},
        {"name": "Ghana admin", "party": "GHA", "roles": ["party_admin"]},
        {"name": "Ghana desk", "party": "GHA", "roles": ["initiator", "approver", "viewer"]},
        {"name": "Ghana AO", "party": "GHA", "roles": ["authorizing_official"]},
        {"name": "Swiss registry", "party": "CHE", "roles": ["registry"], "registry_id": "CHE01"},
        {"name": "EU registry", "party": "EUE", "roles": ["registry"], "registry_id": "EUE01"},
    ],
)
def test_client_create_accepted(body: dict[str, Any]) -> None:
    client = ClientCreate.model_validate(body)
    assert client.roles == [Role(r) for r in body["roles"]]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": "x", "party": None, "roles": ["party_admin"]}, "Secretariat client"),
        ({"name": "x", "roles": ["initiator"]}, "Secretariat client"),
        ({"name": "x", "party": "GHA", "roles": ["secretariat_admin"]}, "cannot hold secretariat_admin"),
        ({"name": "x", "party": "CHE", "roles": ["registry"]}, "registry_id is required"),
        (
            {"name": "x", "party": "CHE", "roles": ["registry", "initiator"], "registry_id": "CHE01"},
            "cannot be combined",
        ),
        ({"name": "x", "party": "CHE", "roles": ["initiator"], "registry_id": "CHE01"}, "only allowed"),
        ({"name": "x", "party": "CHE", "roles": ["registry"], "registry_id": "GHA01"}, "does not belong"),
        ({"name": "x", "party": None, "roles": ["registry"], "registry_id": "CHE01"}, "Secretariat client"),
        ({"name": "x", "party": "GHA", "roles": []}, "at least 1"),
        ({"name": "x", "party": "GHA", "roles": ["viewer", "viewer"]}, "must not repeat"),
        ({"name": "x", "party": "GHA", "roles": ["superuser"]}, "roles"),
        ({"name": "", "party": "GHA", "roles": ["viewer"]}, "name"),
        ({"name": "x" * 201, "party": "GHA", "roles": ["viewer"]}, "name"),
        ({"name": "x", "party": "XXX", "roles": ["viewer"]}, "unknown Party code"),
        ({"name": "x", "party": "GHA", "roles": ["viewer"], "scopes": []}, "scopes"),
        ({"name": "x", "party": "CHE", "roles": ["registry"], "registry_id": "CHE1"}, "registry id"),
    ],
)
def test_client_create_refused(body: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ClientCreate.model_validate(body)
    assert fragment in str(caught.value)


def test_check_client_roles_directly() -> None:
    check_client_roles(None, [Role.SECRETARIAT_ADMIN], None)
    with pytest.raises(ValueError, match="at least one role"):
        check_client_roles("GHA", [], None)


def test_client_views() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    created = ClientCreated(
        client_id="c1",
        client_secret="s3cr3t",
        name="Ghana admin",
        party="GHA",
        roles=[Role.PARTY_ADMIN],
        created_at=now,
    )
    listed = Client.model_validate(created.model_dump(exclude={"client_secret"}))
    assert listed.revoked_at is None
    assert "client_secret" not in listed.model_dump()
    assert "client_secret" not in Client.model_json_schema()["properties"]


def test_token_wire_models() -> None:
    token = TokenResponse(access_token="a.b.c", expires_in=900, scope="")
    assert token.model_dump() == {
        "access_token": "a.b.c",
        "token_type": "Bearer",
        "expires_in": 900,
        "scope": "",
    }
    with pytest.raises(ValidationError):
        TokenResponse.model_validate({"access_token": "a", "token_type": "MAC", "expires_in": 1, "scope": ""})
    error = OAuthError(error=OAuthErrorCode.INVALID_CLIENT)
    assert error.model_dump(exclude_none=True) == {"error": "invalid_client"}
    assert {c.value for c in OAuthErrorCode} == {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    }


def test_access_token_claims() -> None:
    claims = AccessTokenClaims.model_validate(
        {
            "iss": "https://registry.example/",
            "sub": "c1",
            "aud": "a62-registry",
            "exp": 2,
            "iat": 1,
            "jti": "j",
            "client_id": "c1",
            "scope": "",
            "party": "CHE",
            "roles": ["registry"],
            "registry_id": "CHE01",
        }
    )
    assert claims.registry_id == "CHE01"
    secretariat = claims.model_copy(
        update={"party": None, "roles": [Role.SECRETARIAT_ADMIN], "registry_id": None}
    )
    assert secretariat.party is None
