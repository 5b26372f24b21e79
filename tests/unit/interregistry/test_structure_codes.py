"""contracts.interregistry.structure_codes: §6 check group 3 (2001–2006, 2008–2010), every code collected."""

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.identifiers import MAX_SERIAL
from contracts.interregistry import MAX_TRANSFER_BLOCKS, TransferProposal, structure_codes
from tests.unit.interregistry._messages import EXAMPLE_BLOCK, proposal

YEAR = 2026


def block(first: int, last: int, **changes: Any) -> dict[str, Any]:
    """The §5 example block moved to `[first, last]`, identifiers and underlying kept consistent."""
    moved = copy.deepcopy(EXAMPLE_BLOCK)
    moved.update(
        first=first,
        last=last,
        quantity=last - first + 1,
        unique_id_first=f"CA0012-GHA01-GHA-{first}-2024",
        unique_id_last=f"CA0012-GHA01-GHA-{last}-2024",
        underlying={"registry_id": "GS", "first_unit_id": first, "last_unit_id": last},
    )
    moved.update(changes)
    return moved


def codes_of(body: dict[str, Any]) -> list[int]:
    return sorted(
        entry.code for entry in structure_codes(TransferProposal.model_validate(body), current_year=YEAR)
    )


def test_the_design_example_is_well_formed() -> None:
    assert codes_of(proposal()) == []
    two = [block(1, 100), block(101, 400)]
    assert codes_of(proposal(blocks=two)) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"unique_id_first": "CA0012-GHA01-GHA-2-2024"}, [2001]),
        ({"unique_id_last": "CA0012-GHA01-GHA-400-2025"}, [2001]),
        ({"unique_id_first": "CA0012-GHA01-GHA-0001-2024"}, [2001]),
        ({"unique_id_first": "not an id"}, [2001]),
        ({"ca_id": "CA0013"}, [2001, 2001]),  # both identifiers now disagree
        ({"unique_id_first": "CA0012-GHA01-GHA-1-2024".replace("-1-", "-1,000-")}, [2001]),
        (
            {
                "vintage": 2019,
                "unique_id_first": "CA0012-GHA01-GHA-1-2019",
                "unique_id_last": "CA0012-GHA01-GHA-400-2019",
            },
            [2001, 2001, 2005],
        ),
        (
            {
                "vintage": 2027,
                "unique_id_first": "CA0012-GHA01-GHA-1-2027",
                "unique_id_last": "CA0012-GHA01-GHA-400-2027",
            },
            [2005],
        ),
        ({"quantity": 399}, [2003, 2003]),  # block count and message total
        ({"metric": "carbon"}, [2006]),
        ({"mitigation_type": "Avoidance"}, [2006]),
        ({"purposes": "NDC and CORSIA"}, [2006]),
        ({"first_transfer_definition": "Whenever"}, [2006]),
        ({"authorized_parties": ["CHE", "XXX"]}, [2006]),
        ({"underlying": {"registry_id": "GS", "first_unit_id": 9000001, "last_unit_id": 9000399}}, [2008]),
        ({"underlying": {"registry_id": "GS", "first_unit_id": 0, "last_unit_id": 399}}, [2008]),
        ({"authorization_id": " GH-AUTH-7"}, [2010]),
        ({"authorization_id": "GH_AUTH_7"}, [2010]),
        ({"authorization_version": 0}, [2010]),
    ],
)
def test_each_defect_gives_its_code(changes: dict[str, Any], expected: list[int]) -> None:
    assert codes_of(proposal(blocks=[EXAMPLE_BLOCK | changes])) == expected


def test_serial_ranges() -> None:
    reversed_range = block(400, 1) | {"quantity": 400}
    assert 2002 in codes_of(proposal(blocks=[reversed_range]))
    assert 2002 in codes_of(proposal(blocks=[block(0, 399)]))
    huge = block(MAX_SERIAL - 399, MAX_SERIAL)
    assert codes_of(proposal(blocks=[huge])) == [], "64-bit serials are fine"
    beyond = block(MAX_SERIAL - 398, MAX_SERIAL + 1)
    assert 2002 in codes_of(proposal(blocks=[beyond]))


def test_parties_of_the_message_are_checked() -> None:
    assert codes_of(proposal(acquiring_party="XXX")) == [2006]
    assert codes_of(proposal(transferring_party="gha")) == [2006]


def test_every_defect_is_reported_with_its_block() -> None:
    bad = block(101, 200, metric="carbon", authorization_id="-bad-")
    found = structure_codes(
        TransferProposal.model_validate(proposal(quantity=200, blocks=[block(1, 100), bad])),
        current_year=YEAR,
    )
    assert sorted((c.code, c.unique_id_first) for c in found) == [
        (2006, "CA0012-GHA01-GHA-101-2024"),
        (2010, "CA0012-GHA01-GHA-101-2024"),
    ]


def test_too_many_blocks() -> None:
    blocks = [block(n, n) for n in range(1, MAX_TRANSFER_BLOCKS + 2)]
    assert codes_of(proposal(quantity=len(blocks), blocks=blocks)) == [2009]
    assert codes_of(proposal(quantity=len(blocks) - 1, blocks=blocks[:-1])) == []


def test_ranges_of_other_approaches_or_origins_do_not_overlap() -> None:
    other_ca = block(
        1,
        400,
        ca_id="CA0099",
        unique_id_first="CA0099-GHA01-GHA-1-2024",
        unique_id_last="CA0099-GHA01-GHA-400-2024",
    )
    assert codes_of(proposal(quantity=800, blocks=[block(1, 400), other_ca])) == []


@given(st.lists(st.tuples(st.integers(1, 60), st.integers(0, 20)), min_size=1, max_size=8))
def test_overlap_matches_a_pairwise_model(spans: list[tuple[int, int]]) -> None:
    ranges = [(first, first + length) for first, length in spans]
    body = proposal(
        quantity=sum(last - first + 1 for first, last in ranges),
        blocks=[block(first, last) for first, last in ranges],
    )
    overlapping = any(a[0] <= b[1] and b[0] <= a[1] for i, a in enumerate(ranges) for b in ranges[i + 1 :])
    assert (2004 in codes_of(body)) is overlapping
    assert set(codes_of(body)) <= {2004}
