"""Builders of IRX messages for the unit tests: the §5 proposal example and envelopes around any body."""

import copy
import uuid
from typing import Any

SENT_AT = "2026-03-03T10:16:40.201Z"

#: The block of INTERREGISTRY §5's proposal example, verbatim.
EXAMPLE_BLOCK: dict[str, Any] = {
    "unique_id_first": "CA0012-GHA01-GHA-1-2024",
    "unique_id_last": "CA0012-GHA01-GHA-400-2024",
    "ca_id": "CA0012",
    "origin_registry_id": "GHA01",
    "first_transferring_party": "GHA",
    "first": 1,
    "last": 400,
    "quantity": 400,
    "vintage": 2024,
    "metric": "GHG",
    "applicable_gwp_values": "AR5",
    "applicable_non_ghg_metric": None,
    "conversion_factor": None,
    "mitigation_type": "Emission reductions",
    "sector": "Energy generation",
    "activity_type": "Solar",
    "authorization_id": "GH-AUTH-7",
    "authorization_version": 1,
    "purposes": "NDC and OIMP",
    "authorized_parties": None,
    "first_transfer_definition": "Use or Cancellation",
    "first_transferred": True,
    "underlying": {"registry_id": "GS", "first_unit_id": 9000001, "last_unit_id": 9000400},
}

#: The body of INTERREGISTRY §5's proposal example, verbatim.
EXAMPLE_PROPOSAL: dict[str, Any] = {
    "transfer_id": "GHA01-tx_01JNX3",
    "sender_action": "transfer",
    "transferring_party": "GHA",
    "from_registry": "GHA01",
    "from_account": "acc_7Q2",
    "acquiring_party": "CHE",
    "to_registry": "CHE01",
    "to_account": "CH-100-77",
    "quantity": 400,
    "respond_by": "2026-03-04T10:15:02.120Z",
    "note": None,
    "blocks": [EXAMPLE_BLOCK],
}

HELLO_BODY: dict[str, Any] = {
    "supported_versions": ["1.0"],
    "software": {"name": "che-registry", "version": "4.2.1"},
    "registry_time": "2026-03-03T10:16:40.201Z",
}


def proposal(**changes: Any) -> dict[str, Any]:
    """A deep copy of the §5 proposal body with top-level `changes`."""
    body = copy.deepcopy(EXAMPLE_PROPOSAL)
    body.update(changes)
    return body


def envelope(
    message_type: str = "transfer.response",
    body: dict[str, Any] | None = None,
    *,
    sender: str = "CHE01",
    to: str = "IR",
    seq: int | None = 57,
    **changes: Any,
) -> dict[str, Any]:
    """A wire envelope (the JSON object as sent), `from` spelled as on the wire."""
    document: dict[str, Any] = {
        "protocol": "irx",
        "version": "1.0",
        "env": "production",
        "message_id": str(uuid.uuid4()),
        "type": message_type,
        "from": sender,
        "to": to,
        "sent_at": SENT_AT,
        "body": body
        if body is not None
        else {"transfer_id": "GHA01-tx_01JNX3", "decision": "accept", "codes": []},
    }
    if seq is not None:
        document["seq"] = seq
    document.update(changes)
    return document
