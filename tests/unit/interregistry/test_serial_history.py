"""The serial-history rule of incoming transfers (INTERREGISTRY §6 step 6, `domain.serial_history`) against
a per-serial dictionary model: for any current blocks and any incoming range, the same refusal codes, and
when accepted, exactly the never-seen serials become new and exactly the returning ones come back."""

from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from services.transactions.domain import BlockRow, serial_history

REGISTRY = "CHE01"
SPACE = 30
STATES = ("held", "reserved", "pending_in", "used_ndc", "used_oimp", "cancelled", "transferred_out")


@dataclass(frozen=True)
class Unit:
    """What the model knows of one serial the IR has seen."""

    state: str
    to_registry: str | None
    version: int
    frozen: bool


def _row(first: int, last: int, unit: Unit) -> BlockRow:
    return BlockRow(
        ca_id="CA0012",
        origin_registry_id="GHA01",
        first_transferring_party="GHA",
        first_serial=first,
        last_serial=last,
        vintage=2024,
        metric="GHG",
        mitigation_type="Emission reductions",
        authorization_id="GHA-AUTH-1",
        authorization_version=unit.version,
        purposes="NDC",
        state=unit.state,
        party="GHA",
        account_id=None if unit.state == "transferred_out" else "GHA01-100-1",
        to_registry_id=unit.to_registry,
        transfer_id="GHA01-tx_1" if unit.state == "transferred_out" else None,
        frozen_by="rec-1" if unit.frozen else None,
    )


units = st.builds(
    Unit,
    state=st.sampled_from(STATES),
    to_registry=st.sampled_from([REGISTRY, "DNK01"]),
    version=st.sampled_from([1, 1, 1, 2]),
    frozen=st.sampled_from([False, False, False, True]),
)


@st.composite
def ledgers(draw: st.DrawFn) -> tuple[list[BlockRow], dict[int, Unit]]:
    """Current blocks partitioning part of 1..SPACE, and the same as a serial → unit dictionary."""
    cuts = sorted(draw(st.sets(st.integers(2, SPACE), max_size=8)))
    bounds = list(zip([1, *cuts], [c - 1 for c in cuts] + [SPACE], strict=True))
    rows: list[BlockRow] = []
    model: dict[int, Unit] = {}
    for first, last in bounds:
        unit = draw(st.none() | units)
        if unit is None:
            continue
        if unit.state != "transferred_out":
            unit = Unit(unit.state, None, unit.version, unit.frozen)
        rows.append(_row(first, last, unit))
        model.update({serial: unit for serial in range(first, last + 1)})
    return rows, model


def _model(
    model: dict[int, Unit], first: int, last: int, ir_origin: bool
) -> tuple[set[int], set[int], set[int]]:
    codes: set[int] = set()
    fresh: set[int] = set()
    returning: set[int] = set()
    for serial in range(first, last + 1):
        unit = model.get(serial)
        if unit is None:
            fresh.add(serial)
            if ir_origin:
                codes.add(4008)
            continue
        if unit.frozen:
            codes.add(4006)
        if unit.state in ("held", "reserved", "pending_in"):
            codes.add(4002)
        elif unit.state in ("used_ndc", "used_oimp", "cancelled"):
            codes.add(4003)
        elif unit.to_registry != REGISTRY:
            codes.add(4004)
        elif unit.version != 1:
            codes.add(4005)
        elif not unit.frozen:
            returning.add(serial)
    return codes, fresh, returning


@settings(max_examples=400, deadline=None)
@given(ledgers(), st.integers(1, SPACE), st.integers(0, SPACE), st.booleans())
def test_serial_history_matches_the_per_serial_model(
    ledger: tuple[list[BlockRow], dict[int, Unit]], first: int, length: int, ir_origin: bool
) -> None:
    rows, model = ledger
    last = min(SPACE, first + length)
    incoming = _row(first, last, Unit("held", None, 1, False))
    verdict = serial_history(incoming, rows, registry_id=REGISTRY, ir_origin=ir_origin)
    codes, fresh, returning = _model(model, first, last, ir_origin)
    assert {code for code, _ in verdict.codes} == codes
    assert verdict.accepted == (not codes)
    if verdict.accepted:
        assert {s for r in verdict.fresh for s in range(r.first, r.last + 1)} == fresh
        assert {s for r in verdict.returning for s in range(r.first, r.last + 1)} == returning
        assert sum(r.quantity for r in verdict.fresh + verdict.returning) == last - first + 1
    else:
        assert verdict.fresh == [] and verdict.returning == []


def test_underlying_mapping_and_other_series_count() -> None:
    """Invariants include the underlying mapping by offset; blocks of another series never matter."""
    mapped = replace(
        _row(1, 10, Unit("transferred_out", REGISTRY, 1, False)),
        underlying_registry_id="GS",
        underlying_first=101,
    )
    back = mapped.piece(4, 6, state="held", account_id="GHA01-100-1", to_registry_id=None, transfer_id=None)
    assert back.underlying_first == 104
    assert serial_history(back, [mapped], registry_id=REGISTRY, ir_origin=True).returning[0].first == 4
    shifted = replace(back, underlying_first=200)
    assert [c for c, _ in serial_history(shifted, [mapped], registry_id=REGISTRY, ir_origin=True).codes] == [
        4005
    ]
    elsewhere = replace(mapped, ca_id="CA0013")
    assert serial_history(back, [elsewhere], registry_id=REGISTRY, ir_origin=False).fresh[0].first == 4
