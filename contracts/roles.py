"""Roles a principal may hold (DESIGN §3, API.md "Auth")."""

from enum import StrEnum

__all__ = ["SECRETARIAT", "Role"]

#: The pseudo-Party of Secretariat principals; never a valid ISO 3166 code.
SECRETARIAT = "SECRETARIAT"


class Role(StrEnum):
    """What a client may do; a client holds one or more."""

    SECRETARIAT_ADMIN = "secretariat_admin"
    PARTY_ADMIN = "party_admin"
    AUTHORIZING_OFFICIAL = "authorizing_official"
    INITIATOR = "initiator"
    APPROVER = "approver"
    VIEWER = "viewer"
    REGISTRY = "registry"
    AUDITOR = "auditor"
    #: A registry service calling another's `/internal/*` API. Never created through `/v1/clients`: the
    #: gateway keeps one per service (`svc-<service>`) from its configuration.
    SERVICE = "service"
