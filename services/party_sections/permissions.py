"""Who may do what in the party_sections service: one table (`PERMISSIONS`) and one check (`permits`).

Every route and use case asks `authorize()` / `permits()` with an `Action` and the Party whose data it
touches; nothing else in the service decides access. A grant is a role and a scope:

- `own_party`: the principal's token names a Party and it is the Party whose data this is;
- `secretariat`: the principal has no Party (a Secretariat client) and reaches every Party;
- `anyone`: any principal holding the role, whatever its Party (public reference data, internal reads).

Decisions (issue 3, DESIGN §3, domain §3.4 and §6):

- `secretariat_admin` registers cooperative approaches, moves sections, may request a section for any
  Party, reads everything and may block, unblock and close any account; it does not write a Party's own
  data (settings, accounts, entities, NDC periods): those are the Party's acts.
- `party_admin` of a Party is the only one writing that Party's data (its section request, settings,
  accounts, account status, entities, NDC periods), and only its own Party's.
- `viewer`, `initiator`, `approver` and `authorizing_official` read their own Party's section, accounts,
  entities and NDC periods, and nothing of another Party's.
- `auditor` (technical expert review) is read-only: without a Party it reads every Party's non-public data;
  with a Party, that Party's only.
- `registry` (a connected national registry) and `service` (another registry service) get nothing on the
  public API beyond the reference data open to "any token" in API.md (Parties, cooperative approaches,
  which the public register shows anyway). Services use the internal API, which needs `service` or
  `secretariat_admin`.
"""

from dataclasses import dataclass
from enum import StrEnum

from contracts.roles import Role
from kit.auth import Principal
from kit.errors import Forbidden

__all__ = ["PERMISSIONS", "Action", "Grant", "Scope", "authorize", "permits", "reach"]


class Scope(StrEnum):
    OWN_PARTY = "own_party"
    SECRETARIAT = "secretariat"
    ANYONE = "anyone"


class Action(StrEnum):
    CA_CREATE = "ca.create"
    CA_READ = "ca.read"
    SECTION_CREATE = "section.create"
    SECTION_READ = "section.read"
    SECTION_MOVE = "section.move"
    SETTINGS_UPDATE = "settings.update"
    ACCOUNT_READ = "account.read"
    ACCOUNT_CREATE = "account.create"
    ACCOUNT_BLOCK = "account.block"  # block, unblock and close
    ENTITY_CREATE = "entity.create"
    ENTITY_READ = "entity.read"
    NDC_WRITE = "ndc.write"
    NDC_READ = "ndc.read"
    INTERNAL_READ = "internal.read"


@dataclass(frozen=True)
class Grant:
    role: Role
    scope: Scope


def _grants(scope: Scope, *roles: Role) -> tuple[Grant, ...]:
    return tuple(Grant(role, scope) for role in roles)


_SECRETARIAT_ADMIN = _grants(Scope.SECRETARIAT, Role.SECRETARIAT_ADMIN)
_PARTY_ADMIN = _grants(Scope.OWN_PARTY, Role.PARTY_ADMIN)
#: Reading a Party's non-public data: its own people, the Secretariat, and auditors within their grant.
_READERS = _grants(
    Scope.OWN_PARTY,
    Role.PARTY_ADMIN,
    Role.AUTHORIZING_OFFICIAL,
    Role.INITIATOR,
    Role.APPROVER,
    Role.VIEWER,
    Role.AUDITOR,
) + _grants(Scope.SECRETARIAT, Role.SECRETARIAT_ADMIN, Role.AUDITOR)

#: The whole authorization model of the service. Change access here and nowhere else.
PERMISSIONS: dict[Action, tuple[Grant, ...]] = {
    Action.CA_CREATE: _SECRETARIAT_ADMIN,
    # API.md: "any token". Public reference data (the public register lists CAs too).
    Action.CA_READ: _grants(Scope.ANYONE, *Role),
    Action.SECTION_CREATE: _SECRETARIAT_ADMIN + _PARTY_ADMIN,
    Action.SECTION_READ: _READERS,
    Action.SECTION_MOVE: _SECRETARIAT_ADMIN,
    Action.SETTINGS_UPDATE: _PARTY_ADMIN,
    Action.ACCOUNT_READ: _READERS,
    Action.ACCOUNT_CREATE: _PARTY_ADMIN,
    Action.ACCOUNT_BLOCK: _PARTY_ADMIN + _SECRETARIAT_ADMIN,
    Action.ENTITY_CREATE: _PARTY_ADMIN,
    Action.ENTITY_READ: _READERS,
    Action.NDC_WRITE: _PARTY_ADMIN,
    Action.NDC_READ: _READERS,
    Action.INTERNAL_READ: _grants(Scope.ANYONE, Role.SERVICE) + _SECRETARIAT_ADMIN,
}


def _applies(grant: Grant, principal: Principal, party: str | None) -> bool:
    if grant.role not in principal.roles:
        return False
    if grant.scope is Scope.ANYONE:
        return True
    if grant.scope is Scope.SECRETARIAT:
        return principal.party is None
    return principal.party is not None and principal.party == party


def permits(principal: Principal, action: Action, party: str | None = None) -> bool:
    """Whether `principal` may do `action` on the data of `party` (None: data of no one Party)."""
    return any(_applies(grant, principal, party) for grant in PERMISSIONS[action])


def reach(principal: Principal, action: Action) -> frozenset[str] | None:
    """The Parties whose data `action` may touch: None for every Party, else a set (maybe empty)."""
    parties: set[str] = set()
    for grant in PERMISSIONS[action]:
        if grant.role not in principal.roles:
            continue
        if grant.scope is Scope.ANYONE or (grant.scope is Scope.SECRETARIAT and principal.party is None):
            return None
        if grant.scope is Scope.OWN_PARTY and principal.party is not None:
            parties.add(principal.party)
    return frozenset(parties)


def authorize(principal: Principal, action: Action, party: str | None = None) -> None:
    """403 problem unless `permits(principal, action, party)`."""
    if not permits(principal, action, party):
        whose = f" for Party {party}" if party else ""
        raise Forbidden(
            f"This client may not do {action.value}{whose}.", slug="forbidden", action=action.value
        )
