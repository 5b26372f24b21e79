"""The party_sections authorization table, cell by cell: every action × role × whose data (issue 3).

The expectations are written out by hand from the decisions in services/party_sections/permissions.py, so
a change to the table has to change this file too.
"""

import pytest

from contracts.roles import Role
from kit.auth import Principal
from kit.errors import Forbidden
from services.party_sections.permissions import PERMISSIONS, Action, authorize, permits, reach

OWN, OTHER = "GHA", "CHE"

#: The callers: (label, token Party, roles).
CALLERS = {
    "secretariat_admin": (None, Role.SECRETARIAT_ADMIN),
    "global_auditor": (None, Role.AUDITOR),
    "party_admin": (OWN, Role.PARTY_ADMIN),
    "authorizing_official": (OWN, Role.AUTHORIZING_OFFICIAL),
    "initiator": (OWN, Role.INITIATOR),
    "approver": (OWN, Role.APPROVER),
    "viewer": (OWN, Role.VIEWER),
    "party_auditor": (OWN, Role.AUDITOR),
    "registry": (OWN, Role.REGISTRY),
    "service": (None, Role.SERVICE),
}

_COLUMNS = list(CALLERS)


def _table(rows: dict[Action, str]) -> dict[Action, dict[str, str]]:
    table = {}
    for action, cells in rows.items():
        values = cells.split()
        assert len(values) == len(_COLUMNS), action
        table[action] = dict(zip(_COLUMNS, values, strict=True))
    return table


# Cells: YY own and other allowed, YN own only, NN neither; Y/N alone for actions on no one Party's data.
EXPECTED = _table(
    {
        #                      SA GAUD PA AO INI APP VIEW PAUD REG SVC
        Action.CA_CREATE: "Y N N N N N N N N N",
        Action.CA_READ: "Y Y Y Y Y Y Y Y Y Y",
        Action.SECTION_CREATE: "YY NN YN NN NN NN NN NN NN NN",
        Action.SECTION_READ: "YY YY YN YN YN YN YN YN NN NN",
        Action.SECTION_MOVE: "YY NN NN NN NN NN NN NN NN NN",
        Action.SETTINGS_UPDATE: "NN NN YN NN NN NN NN NN NN NN",
        Action.ACCOUNT_READ: "YY YY YN YN YN YN YN YN NN NN",
        Action.ACCOUNT_CREATE: "NN NN YN NN NN NN NN NN NN NN",
        Action.ACCOUNT_BLOCK: "YY NN YN NN NN NN NN NN NN NN",
        Action.ENTITY_CREATE: "NN NN YN NN NN NN NN NN NN NN",
        Action.ENTITY_READ: "YY YY YN YN YN YN YN YN NN NN",
        Action.NDC_WRITE: "NN NN YN NN NN NN NN NN NN NN",
        Action.NDC_READ: "YY YY YN YN YN YN YN YN NN NN",
        Action.INTERNAL_READ: "Y N N N N N N N N Y",
    }
)


def _principal(caller: str) -> Principal:
    party, role = CALLERS[caller]
    return Principal(client_id=caller, party=party, roles=frozenset({role}))


def test_every_action_has_a_row_here_and_in_the_table() -> None:
    assert set(EXPECTED) == set(Action) == set(PERMISSIONS)


@pytest.mark.parametrize("caller", _COLUMNS)
@pytest.mark.parametrize("action", list(Action))
def test_the_cell(action: Action, caller: str) -> None:
    principal = _principal(caller)
    cell = EXPECTED[action][caller]
    if len(cell) == 1:
        assert permits(principal, action) is (cell == "Y")
        return
    assert permits(principal, action, OWN) is (cell[0] == "Y"), "own Party"
    assert permits(principal, action, OTHER) is (cell[1] == "Y"), "other Party"
    if cell == "NN":
        with pytest.raises(Forbidden):
            authorize(principal, action, OWN)


def test_reach_lists_the_parties_a_caller_may_touch() -> None:
    assert reach(_principal("secretariat_admin"), Action.SECTION_READ) is None
    assert reach(_principal("global_auditor"), Action.ACCOUNT_READ) is None
    assert reach(_principal("viewer"), Action.SECTION_READ) == {OWN}
    assert reach(_principal("viewer"), Action.SECTION_CREATE) == frozenset()
    assert reach(_principal("registry"), Action.CA_READ) is None


def test_a_secretariat_role_on_a_party_client_reaches_only_that_party() -> None:
    # The gateway never issues such a client; if one existed, `secretariat` grants would not apply.
    odd = Principal(client_id="odd", party=OWN, roles=frozenset({Role.SECRETARIAT_ADMIN, Role.AUDITOR}))
    assert not permits(odd, Action.SECTION_MOVE, OWN)
    assert permits(odd, Action.SECTION_READ, OWN) and not permits(odd, Action.SECTION_READ, OTHER)


def test_roles_add_up() -> None:
    both = Principal(client_id="both", party=OWN, roles=frozenset({Role.VIEWER, Role.PARTY_ADMIN}))
    assert permits(both, Action.ACCOUNT_CREATE, OWN) and not permits(both, Action.ACCOUNT_CREATE, OTHER)
