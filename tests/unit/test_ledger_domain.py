"""The ledger's domain core without a database: selection order, splitting, coalescing, diffs, checks."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.accounts import AccountStatus, AccountType
from contracts.actions import TransactionType
from contracts.party_sections import AccountLookup, NdcPeriod, SectionLookup, SectionStatus
from services.transactions import checks
from services.transactions.domain import (
    BlockRow,
    InsufficientUnits,
    RangesNotHeld,
    SerialRange,
    can_merge,
    coalesce,
    diff,
    move,
    take_quantity,
    take_ranges,
)
from services.transactions.journal import GENESIS, entry_hash


def block(
    first: int, last: int, *, id: int | None = None, vintage: int = 2024, ca: str = "CA0012", **kw: object
) -> BlockRow:
    values: dict = {
        "ca_id": ca,
        "origin_registry_id": "GHA01",
        "first_transferring_party": "GHA",
        "first_serial": first,
        "last_serial": last,
        "vintage": vintage,
        "metric": "GHG",
        "mitigation_type": "Emission reductions",
        "authorization_id": "A-1",
        "authorization_version": 1,
        "purposes": "NDC",
        "state": "held",
        "party": "CHE",
        "account_id": "CHE01-100-1",
        "id": id,
    }
    values.update(kw)
    return BlockRow(**values)


def test_quantity_comes_from_the_low_end_in_the_design_order() -> None:
    newer = block(1, 100, id=1, vintage=2025)
    older_ca2 = block(500, 599, id=2, ca="CA0013")
    older = block(900, 909, id=3)
    takes = take_quantity([newer, older_ca2, older], 115)
    # vintage first, then CA, then serial: 2024/CA0012 (10), 2024/CA0013 (100), then 2025 (5).
    assert [(t.block.id, t.first, t.last) for t in takes] == [(3, 900, 909), (2, 500, 599), (1, 1, 5)]
    with pytest.raises(InsufficientUnits) as short:
        take_quantity([older], 11)
    assert (short.value.wanted, short.value.available) == (11, 10)


def test_a_partly_taken_block_gives_its_lowest_serials_and_keeps_the_row() -> None:
    source = block(1, 100, id=7, underlying_registry_id="GS", underlying_first=9001)
    rest, moved = move(take_quantity([source], 30), state="held", account_id="GHA01-100-1", party="GHA")
    assert [(r.id, r.first_serial, r.last_serial, r.underlying_first) for r in rest] == [(7, 31, 100, 9031)]
    assert [(m.id, m.first_serial, m.last_serial, m.account_id, m.underlying_last) for m in moved] == [
        (None, 1, 30, "GHA01-100-1", 9030)
    ]
    whole_rest, whole = move(take_quantity([source], 100), state="used_ndc")
    assert whole_rest == [] and whole[0].id == 7 and whole[0].state == "used_ndc"


def test_named_ranges_split_a_block_in_three_and_report_what_is_missing() -> None:
    source = block(1, 100, id=1)
    takes = take_ranges([source], [SerialRange("CA0012", "GHA01", 40, 49)])
    rest, moved = move(takes, account_id="X")
    assert [(r.id, r.first_serial, r.last_serial) for r in rest] == [(1, 1, 39), (None, 50, 100)]
    assert [(m.first_serial, m.last_serial) for m in moved] == [(40, 49)]
    with pytest.raises(RangesNotHeld) as missing:
        take_ranges([source, block(200, 300, id=2)], [SerialRange("CA0012", "GHA01", 90, 210)])
    assert [(r.first, r.last) for r in missing.value.missing] == [(101, 199)]


def test_coalescing_merges_only_identical_adjacent_blocks() -> None:
    a, b = block(1, 10, id=5), block(11, 20, id=3)
    assert can_merge(a, b) and not can_merge(b, a)
    assert coalesce([b, a]) == [block(1, 20, id=3)]
    assert len(coalesce([a, block(11, 20, account_id="other")])) == 2
    assert len(coalesce([a, block(12, 20)])) == 2  # a gap
    assert len(coalesce([a, block(11, 20, authorization_version=2)])) == 2
    mapped = [
        block(1, 10, underlying_registry_id="GS", underlying_first=1),
        block(11, 20, underlying_registry_id="GS", underlying_first=11),
    ]
    assert len(coalesce(mapped)) == 1
    mapped[1] = replace(mapped[1], underlying_first=50)
    assert len(coalesce(mapped)) == 2


def test_diff_orders_writes_so_no_statement_overlaps() -> None:
    source, neighbour = block(1, 100, id=1), block(101, 200, id=2, account_id="GHA01-100-1", party="GHA")
    rest, moved = move(
        take_ranges([source], [SerialRange("CA0012", "GHA01", 51, 100)]),
        account_id="GHA01-100-1",
        party="GHA",
    )
    final = coalesce(rest + moved + [neighbour])
    changes = diff([source, neighbour], final)
    assert [c.kind for c in changes] == ["update", "update"]
    shrink, grow = changes
    assert (shrink.after.first_serial, shrink.after.last_serial) == (1, 50)  # type: ignore[union-attr]
    assert (grow.after.first_serial, grow.after.last_serial) == (51, 200)  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=8),
    wanted=st.integers(1, 400),
)
def test_moves_conserve_serials(sizes: list[int], wanted: int) -> None:
    rows, first = [], 1
    for index, size in enumerate(sizes):
        rows.append(block(first, first + size - 1, id=index + 1, vintage=2021 + index % 3))
        first += size + (index % 2)  # some gaps
    total = sum(sizes)
    if wanted > total:
        with pytest.raises(InsufficientUnits):
            take_quantity(rows, wanted)
        return
    takes = take_quantity(rows, wanted)
    rest, moved = move(takes, account_id="DEST")
    assert sum(m.quantity for m in moved) == wanted
    touched = {t.block.id: t.block for t in takes}.values()
    before = {s for r in touched for s in range(r.first_serial, r.last_serial + 1)}
    after = [s for r in rest + moved for s in range(r.first_serial, r.last_serial + 1)]
    assert sorted(after) == sorted(before) and len(after) == len(set(after))
    ids = [r.id for r in rest + moved if r.id is not None]
    assert len(ids) == len(set(ids))


def test_hash_chain_is_deterministic() -> None:
    payload = {
        "transaction_id": "tx_1",
        "entry_type": "transfer",
        "block_before": None,
        "block_after": {"a": 2**62},
    }
    one = entry_hash(GENESIS, 1, payload)
    assert one == entry_hash(GENESIS, 1, dict(reversed(payload.items())))
    assert one != entry_hash(GENESIS, 2, payload) and len(one) == 64


def _account(party: str, type: AccountType = AccountType.HOLDING, **kw: object) -> AccountLookup:
    values: dict = {
        "account_id": f"{party}01-{type.code}-1",
        "party": party,
        "registry_id": f"{party}01",
        "type": type,
        "type_code": type.code,
        "status": AccountStatus.OPEN,
        "holder_entity_id": None,
        "section_status": SectionStatus.OPEN,
        "four_eyes": False,
    }
    values.update(kw)
    return AccountLookup(**values)


def _context(**kw: object) -> checks.CheckContext:
    values: dict = {
        "type": TransactionType.TRANSFER,
        "party": "CHE",
        "from_account_id": "CHE01-100-1",
        "to_account_id": "GHA01-100-1",
        "from_account": _account("CHE"),
        "to_account": _account("GHA"),
        "section": None,
        "quantity": 10,
        "taken": [block(1, 10)],
        "ca_participants": {"CA0012": frozenset({"CHE", "GHA"})},
    }
    values.update(kw)
    return checks.CheckContext(**values)


def _codes(ctx: checks.CheckContext) -> set[str]:
    return {c.code for c in checks.evaluate(ctx)}


def test_checks() -> None:
    assert _codes(_context()) == set()
    assert _codes(_context(ca_participants={"CA0012": frozenset({"CHE"})})) == {"T07"}
    assert _codes(_context(taken=[block(1, 10, authorized_parties="CHE,SWE")])) == {"T05A"}
    assert _codes(_context(from_account=_account("CHE", status=AccountStatus.BLOCKED))) == {"A02"}
    assert _codes(_context(from_account=_account("CHE", section_status=SectionStatus.SUSPENDED))) == {"A04"}
    assert _codes(_context(to_account=_account("GHA", section_status=SectionStatus.CLOSED))) == {"T10"}
    assert _codes(_context(from_account=_account("GHA"))) == {"A01"}
    assert _codes(_context(taken=None, shortfall="short")) == {"T01"}
    assert _codes(_context(taken=[block(1, 10, frozen_by="rec-1")])) == {"F02"}
    section = SectionLookup(
        party="CHE",
        registry_id="CHE01",
        status=SectionStatus.OPEN,
        ars=False,
        four_eyes=False,
        ndc_periods=[NdcPeriod(first_year=2021, last_year=2030)],
        version=1,
    )
    use = {
        "type": TransactionType.USE_NDC,
        "to_account_id": None,
        "to_account": _account("CHE", AccountType.NDC_USE),
        "section": section,
    }
    assert _codes(_context(**use, ndc_use_year=2030)) == set()
    assert _codes(_context(**use, ndc_use_year=2031)) == {"N01"}
    oimp = {**use, "type": TransactionType.USE_OIMP}
    assert _codes(_context(**oimp)) == {"T05"}
    assert _codes(_context(**oimp, taken=[block(1, 10, purposes="NDC and OIMP")])) == set()
    omge = {**use, "type": TransactionType.OMGE_CANCELLATION}
    assert _codes(_context(**omge)) == set()  # OMGE cancellation is always available


def test_catalogue_codes_are_stable() -> None:
    """Codes are a public contract: this list only ever grows."""
    assert [c.code for c in checks.CATALOGUE] == [
        "Q01", "Q02", "Q03", "Q04", "Q05", "A01", "A02", "A03", "A04", "A05", "A06", "A07",
        "T01", "T02", "T03", "T04", "T05", "T05A", "T06", "T07", "T08", "T09", "T10", "T11",
        "N01", "F01", "F02", "C01", "C02", "C03", "C04", "C05",
    ]  # fmt: skip
