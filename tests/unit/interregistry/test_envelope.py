"""contracts.interregistry: the envelope, message bodies and registry records refuse what §3–§8 refuse."""

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from contracts.interregistry import (
    INBOX_MESSAGE_TYPES,
    MESSAGE_BODIES,
    REGISTRY_MESSAGE_TYPES,
    REGISTRY_TRANSITIONS,
    EnvelopeRefused,
    HelloRequest,
    InboxAck,
    IrxCode,
    IrxEnvelope,
    IrxEnvironment,
    IrxMessageType,
    ReconciliationRequested,
    ReconciliationStatus,
    RegistryCreate,
    RegistryPatch,
    RegistryStatus,
    TransferBlock,
    TransferCode,
    TransferFinal,
    TransferProposal,
    TransferResponse,
    TransferStatus,
    allowed_message_types,
    normalise_rejection_codes,
    parse_envelope,
)
from contracts.transactions import Block
from tests.unit.interregistry._messages import EXAMPLE_BLOCK, HELLO_BODY, envelope, proposal

# ---- envelope ------------------------------------------------------------------------------------------


def test_the_design_example_round_trips_to_the_same_wire_object() -> None:
    wire = envelope("transfer.proposal", proposal(), sender="IR", to="CHE01", seq=118)
    parsed = parse_envelope(wire)
    assert parsed.sender == "IR" and parsed.to == "CHE01" and parsed.seq == 118
    assert parsed.type is IrxMessageType.TRANSFER_PROPOSAL
    body = parsed.parsed_body()
    assert isinstance(body, TransferProposal) and body.blocks[0].underlying is not None
    assert parsed.to_wire() == wire, "what we parse and re-emit must be byte-for-byte the signed object"


def test_from_is_the_wire_name_and_sender_the_python_name() -> None:
    built = IrxEnvelope(
        env=IrxEnvironment.SANDBOX,
        message_id=uuid.uuid4(),
        type=IrxMessageType.HELLO,
        sender="CHE01",
        to="IR",
        sent_at=datetime(2026, 3, 3, 10, 16, 40, 201000, tzinfo=UTC),
        body=HELLO_BODY,
    )
    wire = built.to_wire()
    assert wire["from"] == "CHE01" and "sender" not in wire
    assert "seq" not in wire, "hello carries no seq, not a null one"
    assert wire["sent_at"] == "2026-03-03T10:16:40.201Z"
    assert IrxEnvelope.model_validate(wire) == built


@pytest.mark.parametrize(
    "change",
    [
        {"extra": 1},  # unknown member
        {"protocol": "des"},
        {"env": "staging"},
        {"message_id": "not-a-uuid"},
        {"type": "transfer.accept"},
        {"from": "che01"},
        {"from": "CHE1"},
        {"to": "CHE01"},  # from = to
        {"seq": "57"},  # strict: no strings for integers
        {"seq": 0},
        {"seq": True},
        {"sent_at": "2026-03-03T10:16:40"},  # no time zone
        {"body": []},
    ],
)
def test_malformed_envelopes_are_refused_with_1003(change: dict[str, Any]) -> None:
    wire = envelope() | change
    with pytest.raises(EnvelopeRefused) as refused:
        parse_envelope(wire)
    assert refused.value.code is IrxCode.MALFORMED_MESSAGE


def test_missing_members_are_1003() -> None:
    for member in ("env", "message_id", "type", "from", "to", "sent_at", "body", "seq"):
        wire = envelope()
        del wire[member]
        with pytest.raises(EnvelopeRefused) as refused:
            parse_envelope(wire)
        assert refused.value.code is IrxCode.MALFORMED_MESSAGE, member


@pytest.mark.parametrize(
    ("version", "code"),
    [
        ("2.0", IrxCode.MAJOR_VERSION_UNSUPPORTED),
        ("1.9", IrxCode.MINOR_VERSION_ABOVE_OURS),
        ("1", IrxCode.MALFORMED_MESSAGE),
    ],
)
def test_the_version_is_judged_before_the_schema(version: str, code: IrxCode) -> None:
    wire = envelope(version=version, unknown_member_of_a_later_version=True)
    with pytest.raises(EnvelopeRefused) as refused:
        parse_envelope(wire)
    assert refused.value.code is code


def test_one_side_is_always_the_ir_and_types_follow_the_direction() -> None:
    with pytest.raises(EnvelopeRefused):
        parse_envelope(envelope(sender="CHE01", to="GHA01"))
    # An inbox type POSTed by a registry, and a registry type written to an inbox.
    with pytest.raises(EnvelopeRefused):
        parse_envelope(envelope("transfer.completed", {}, sender="CHE01", to="IR"))
    with pytest.raises(EnvelopeRefused):
        parse_envelope(envelope("transfer.response", sender="IR", to="CHE01"))


def test_hello_has_no_seq_and_everything_else_has_one() -> None:
    assert parse_envelope(envelope("hello", HELLO_BODY, seq=None)).seq is None
    with pytest.raises(EnvelopeRefused):
        parse_envelope(envelope("hello", HELLO_BODY, seq=1))
    with pytest.raises(EnvelopeRefused):
        parse_envelope(envelope(seq=None))


def test_the_body_is_checked_against_its_type() -> None:
    with pytest.raises(EnvelopeRefused) as refused:
        parse_envelope(envelope(body={"transfer_id": "GHA01-tx_1", "decision": "accept", "extra": 1}))
    assert "extra" in str(refused.value)
    with pytest.raises(EnvelopeRefused):
        parse_envelope(envelope("inbox.ack", {"up_to": -1}))
    assert parse_envelope(envelope("inbox.ack", {"up_to": 119})).parsed_body() == InboxAck(up_to=119)


def test_every_message_type_has_a_body_model_and_a_direction() -> None:
    assert set(MESSAGE_BODIES) == set(IrxMessageType)
    assert set(IrxMessageType) == REGISTRY_MESSAGE_TYPES | INBOX_MESSAGE_TYPES
    assert {IrxMessageType.TRANSFER_PROPOSAL} == REGISTRY_MESSAGE_TYPES & INBOX_MESSAGE_TYPES
    for model in MESSAGE_BODIES.values():
        assert issubclass(model, BaseModel)


# ---- transfer bodies -----------------------------------------------------------------------------------


def test_transfer_blocks_carry_every_invariant_of_a_ledger_block() -> None:
    ledger_only = {"state", "account_id", "party", "reserved_by", "to_registry_id", "transfer_id", "frozen"}
    assert set(TransferBlock.model_fields) == set(Block.model_fields) - ledger_only
    ledger_block = Block.model_validate(
        EXAMPLE_BLOCK | {"state": "held", "account_id": "acc_1", "party": "GHA"}
    )
    assert TransferBlock.from_block(ledger_block).model_dump(mode="json") == EXAMPLE_BLOCK


@pytest.mark.parametrize(
    "change",
    [
        {"first": "1"},
        {"first_transferred": 1},
        {"vintage": 2024.0},
        {"underlying": {"registry_id": "GS", "first_unit_id": 1}},
        {"state": "held"},
    ],
)
def test_blocks_are_strictly_typed(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TransferBlock.model_validate(EXAMPLE_BLOCK | change)


def test_ledger_errors_in_blocks_are_left_to_the_receivers_codes() -> None:
    # Well formed but wrong for the ledger: 2001, 2002, 2005, 2006, 2008 are rejections the IR records,
    # so the schema must let them through.
    wrong = EXAMPLE_BLOCK | {
        "unique_id_first": "CA0012-GHA01-GHA-2-2024",
        "first": 500,
        "last": 400,
        "vintage": 2019,
        "metric": "carbon",
        "underlying": {"registry_id": "GS", "first_unit_id": 10, "last_unit_id": 1},
    }
    assert TransferBlock.model_validate(wrong).first == 500


@pytest.mark.parametrize("transfer_id", ["tx_1", "GHA01-", "gha01-tx", "GHA01-a/b", "GHA01-" + "x" * 59])
def test_transfer_ids_are_registry_prefixed_and_path_safe(transfer_id: str) -> None:
    with pytest.raises(ValidationError):
        TransferProposal.model_validate(proposal(transfer_id=transfer_id))


def test_a_proposal_needs_blocks() -> None:
    with pytest.raises(ValidationError):
        TransferProposal.model_validate(proposal(blocks=[]))


def test_a_reject_needs_codes_and_an_accept_has_none() -> None:
    with pytest.raises(ValidationError):
        TransferResponse(transfer_id="GHA01-tx_1", decision="reject")
    with pytest.raises(ValidationError):
        TransferResponse(
            transfer_id="GHA01-tx_1", decision="accept", codes=[TransferCode(code=5902, message="no account")]
        )
    reject = TransferResponse(
        transfer_id="GHA01-tx_1", decision="reject", codes=[TransferCode(code=5902, message="no account")]
    )
    assert reject.codes[0].code == IrxCode.ACCOUNT_DOES_NOT_EXIST


def test_unknown_reject_codes_are_recorded_as_5999_keeping_the_original() -> None:
    codes = [
        TransferCode(code=5902, message="no account CH-100-77"),
        TransferCode(code=4002, message="already held", unique_id_first="CA0012-GHA01-GHA-1-2024"),
        TransferCode(code=1234, message="our own reason"),
        TransferCode(code=6001, message="not a receiver code"),
    ]
    recorded = normalise_rejection_codes(codes)
    assert [c.code for c in recorded] == [5902, 4002, 5999, 5999]
    assert recorded[2].message == "[1234] our own reason" and recorded[3].message.startswith("[6001]")
    assert recorded[1].unique_id_first == "CA0012-GHA01-GHA-1-2024"


def test_final_messages_carry_only_final_statuses() -> None:
    final = TransferFinal(
        transfer_id="GHA01-tx_1",
        direction="ir_to_registry",
        status=TransferStatus.TERMINATED,
        decided_at=datetime(2026, 3, 4, 10, 15, 2, tzinfo=UTC),
        codes=[TransferCode(code=6001, message="no answer by respond_by")],
    )
    assert final.message_type is IrxMessageType.TRANSFER_TERMINATED
    for status in (TransferStatus.SENT, TransferStatus.ACCEPTED, TransferStatus.PROPOSED):
        with pytest.raises(ValidationError):
            TransferFinal(
                transfer_id="GHA01-tx_1",
                direction="ir_to_registry",
                status=status,
                decided_at=final.decided_at,
            )


def test_hello_needs_at_least_one_well_formed_version() -> None:
    assert HelloRequest.model_validate(HELLO_BODY).supported_versions == ["1.0"]
    for versions in ([], ["one"], ["1"]):
        with pytest.raises(ValidationError):
            HelloRequest.model_validate(HELLO_BODY | {"supported_versions": versions})


def test_reconciliation_requests_carry_the_members_of_their_stage() -> None:
    base = {
        "reconciliation_id": "rec_1",
        "cutoff_position": 1200,
        "cutoff_seq": 431,
        "respond_by": "2026-03-03T11:00:00Z",
    }
    ReconciliationRequested.model_validate(base | {"stage": "totals"})
    key = {"direction": "ir_to_registry", "ca_id": "CA0012", "vintage": 2024, "metric": "GHG"}
    ReconciliationRequested.model_validate(base | {"stage": "blocks", "keys": [key]})
    ReconciliationRequested.model_validate(base | {"stage": "audit_trail", "transfer_ids": ["GHA01-tx_1"]})
    for wrong in (
        {"stage": "totals", "keys": [key]},
        {"stage": "blocks"},
        {"stage": "audit_trail", "keys": [key]},
    ):
        with pytest.raises(ValidationError):
            ReconciliationRequested.model_validate(base | wrong)
    assert [s.itl_code for s in ReconciliationStatus] == [1, 3, 4, 5, 6, None]
    assert {s for s in ReconciliationStatus if s.open} == {
        ReconciliationStatus.INITIATED,
        ReconciliationStatus.TOTALS_INCONSISTENT,
        ReconciliationStatus.BLOCKS_INCONSISTENT,
    }


# ---- registry records ----------------------------------------------------------------------------------

_SANDBOX_RECORD: dict[str, Any] = {
    "registry_id": "CHE01",
    "party": "CHE",
    "name": "Swiss national registry",
    "environment": "sandbox",
    "jwks_url": "http://127.0.0.1:8200/jwks.json",
    "signing": "optional",
    "response_timeout_s": 300,
}


def test_registry_records_in_the_sandbox_may_relax_signing_and_timeouts() -> None:
    record = RegistryCreate.model_validate(_SANDBOX_RECORD)
    assert record.response_timeout_s == 300 and record.contacts == []
    inline = RegistryCreate.model_validate(_SANDBOX_RECORD | {"jwks_url": None, "jwks": {"keys": []}})
    assert inline.jwks == {"keys": []}


@pytest.mark.parametrize(
    "change",
    [
        {"signing": "optional"},
        {"jwks_url": "http://che.example/jwks.json"},
        {"jwks": {"keys": []}},
        {"response_timeout_s": 300},
        {"response_timeout_s": 300_000},
        {"party": "GHA"},  # CHE01 is not Ghana's
        {"registry_id": "CHE1"},
        {"status": "active"},  # the lifecycle is not set by the creator
    ],
)
def test_production_records_are_strict(change: dict[str, Any]) -> None:
    production = _SANDBOX_RECORD | {
        "environment": "production",
        "jwks_url": "https://registry.che.example/jwks.json",
        "signing": "required",
        "response_timeout_s": 86_400,
    }
    RegistryCreate.model_validate(production)
    with pytest.raises(ValidationError):
        RegistryCreate.model_validate(production | change)


def test_patches_are_rechecked_against_the_stored_environment() -> None:
    patch = RegistryPatch(signing="optional")
    patch.check_against(IrxEnvironment.SANDBOX)
    with pytest.raises(ValueError, match="production"):
        patch.check_against(IrxEnvironment.PRODUCTION)
    with pytest.raises(ValidationError):
        RegistryPatch.model_validate({"status": "active"})
    assert {"jwks_url", "webhook_url"} == RegistryPatch.REGISTRY_EDITABLE


def test_lifecycle_transitions() -> None:
    reachable = {RegistryStatus.ONBOARDING}
    frontier = [RegistryStatus.ONBOARDING]
    while frontier:
        status = frontier.pop()
        for sources, target in REGISTRY_TRANSITIONS.values():
            if status in sources and target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(RegistryStatus)
    assert not any(RegistryStatus.DISCONNECTED in sources for sources, _ in REGISTRY_TRANSITIONS.values())
    assert REGISTRY_TRANSITIONS["activate"] == (frozenset({RegistryStatus.TESTING}), RegistryStatus.ACTIVE)
    assert REGISTRY_TRANSITIONS["reactivate"][1] is RegistryStatus.ACTIVE


@pytest.mark.parametrize(
    ("status", "environment", "proposal_allowed", "response_allowed", "hello_allowed"),
    [
        ("active", "production", True, True, True),
        ("suspended", "production", False, True, True),
        ("onboarding", "production", False, False, True),
        ("testing", "production", False, False, True),
        ("testing", "sandbox", True, True, True),
        ("onboarding", "sandbox", True, True, True),
        ("disconnected", "sandbox", False, False, False),
        ("disconnected", "production", False, False, False),
    ],
)
def test_what_a_registry_may_send_in_each_status(
    status: str, environment: str, proposal_allowed: bool, response_allowed: bool, hello_allowed: bool
) -> None:
    allowed = allowed_message_types(RegistryStatus(status), IrxEnvironment(environment))
    assert (IrxMessageType.TRANSFER_PROPOSAL in allowed) is proposal_allowed
    assert (IrxMessageType.TRANSFER_RESPONSE in allowed) is response_allowed
    assert (IrxMessageType.HELLO in allowed) is hello_allowed
    assert allowed <= REGISTRY_MESSAGE_TYPES
