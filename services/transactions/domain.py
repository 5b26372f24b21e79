"""The ledger's domain core: blocks as values, selection in the DESIGN order, splitting, coalescing.

Pure: no I/O, no SQL, no clock. The unit of work (`ledger.py`) loads rows, asks this module what the
ledger should look like afterwards, and writes the difference. Tests: tests/unit/test_ledger_domain.py.

DESIGN §4: a quantity is taken from the low end, deterministically — blocks in the order vintage, CA,
originating registry, serial; a partly taken block gives its lowest serials and keeps the rest. A caller
may name exact serial ranges instead. Adjacent blocks with identical attributes in the same account and
state are coalesced, so fragmentation does not grow without bound.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = [
    "ATTRIBUTE_FIELDS",
    "INVARIANT_FIELDS",
    "BlockRow",
    "Change",
    "HistoryVerdict",
    "InsufficientUnits",
    "RangesNotHeld",
    "SerialRange",
    "Take",
    "can_merge",
    "coalesce",
    "diff",
    "move",
    "order_key",
    "same_invariants",
    "serial_history",
    "take_quantity",
    "take_ranges",
]


@dataclass(frozen=True, slots=True)
class BlockRow:
    """A current block as stored: one contiguous serial range and everything copied with it.

    Field names are the `blocks` columns. `id` is None for a row not written yet.
    """

    ca_id: str
    origin_registry_id: str
    first_transferring_party: str
    first_serial: int
    last_serial: int
    vintage: int
    metric: str
    mitigation_type: str
    authorization_id: str
    authorization_version: int
    purposes: str
    state: str
    party: str
    account_id: str | None = None
    applicable_gwp_values: str | None = None
    applicable_non_ghg_metric: str | None = None
    conversion_factor: str | None = None
    sector: str | None = None
    activity_type: str | None = None
    authorized_parties: str | None = None
    first_transfer_definition: str | None = None
    underlying_registry_id: str | None = None
    underlying_first: int | None = None
    reserved_by: str | None = None
    to_registry_id: str | None = None
    transfer_id: str | None = None
    frozen_by: str | None = None
    id: int | None = field(default=None, compare=True)

    def __post_init__(self) -> None:
        if not 1 <= self.first_serial <= self.last_serial:
            raise ValueError(f"invalid serial range {self.first_serial}..{self.last_serial}")

    @property
    def quantity(self) -> int:
        return self.last_serial - self.first_serial + 1

    @property
    def underlying_last(self) -> int | None:
        if self.underlying_first is None:
            return None
        return self.underlying_first + self.last_serial - self.first_serial

    def attributes(self) -> tuple[Any, ...]:
        """Everything but the range and the id: two adjacent blocks merge iff these are equal."""
        return tuple(getattr(self, name) for name in ATTRIBUTE_FIELDS)

    def piece(self, first: int, last: int, *, id: int | None = None, **changes: Any) -> "BlockRow":
        """The sub-range `first..last` (underlying mapping shifted by the offset), with `changes`."""
        if not self.first_serial <= first <= last <= self.last_serial:
            raise ValueError(f"{first}..{last} is not inside {self.first_serial}..{self.last_serial}")
        underlying = None
        if self.underlying_first is not None:
            underlying = self.underlying_first + first - self.first_serial
        return replace(
            self, first_serial=first, last_serial=last, underlying_first=underlying, id=id, **changes
        )

    def columns(self) -> dict[str, Any]:
        """The row as `blocks` column values (without `id`, and with `underlying_last`)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "id"}
        values["underlying_last"] = self.underlying_last
        return values

    @classmethod
    def from_row(cls, row: Any) -> "BlockRow":
        """From a `blocks` row mapping (extra keys such as `updated_at` ignored)."""
        values = {name: row[name] for name in _FIELD_NAMES}
        if values["conversion_factor"] is not None:
            values["conversion_factor"] = _decimal_text(values["conversion_factor"])
        return cls(**values)


_FIELD_NAMES = tuple(f.name for f in fields(BlockRow))
_RANGE_FIELDS = frozenset({"id", "first_serial", "last_serial", "underlying_first"})
#: The fields that must be equal for two adjacent blocks to coalesce (all but range and id).
ATTRIBUTE_FIELDS = tuple(name for name in _FIELD_NAMES if name not in _RANGE_FIELDS)


def _decimal_text(value: Any) -> str:
    text = format(value, "f") if not isinstance(value, str) else value
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def order_key(block: BlockRow) -> tuple[int, str, str, int]:
    """DESIGN §4 selection order: vintage, CA, originating registry, serial."""
    return (block.vintage, block.ca_id, block.origin_registry_id, block.first_serial)


@dataclass(frozen=True, slots=True)
class SerialRange:
    """Serials `first..last` of one (CA, originating registry)."""

    ca_id: str
    origin_registry_id: str
    first: int
    last: int

    @property
    def quantity(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class Take:
    """Serials `first..last` taken out of `block`."""

    block: BlockRow
    first: int
    last: int

    @property
    def quantity(self) -> int:
        return self.last - self.first + 1


class InsufficientUnits(Exception):
    def __init__(self, wanted: int, available: int) -> None:
        super().__init__(f"{wanted} units wanted, {available} spendable")
        self.wanted = wanted
        self.available = available


class RangesNotHeld(Exception):
    """Some requested serials are not in the candidate blocks; `missing` says which."""

    def __init__(self, missing: list[SerialRange]) -> None:
        super().__init__(f"{len(missing)} range(s) not held")
        self.missing = missing


def take_quantity(candidates: Iterable[BlockRow], quantity: int) -> list[Take]:
    """`quantity` units from the low end of `candidates` in the DESIGN order; InsufficientUnits if short."""
    if quantity < 1:
        raise ValueError("quantity must be positive")
    takes: list[Take] = []
    needed = quantity
    for block in sorted(candidates, key=order_key):
        if needed == 0:
            break
        count = min(needed, block.quantity)
        takes.append(Take(block, block.first_serial, block.first_serial + count - 1))
        needed -= count
    if needed:
        raise InsufficientUnits(quantity, quantity - needed)
    return takes


def take_ranges(candidates: Iterable[BlockRow], ranges: Sequence[SerialRange]) -> list[Take]:
    """Exactly the serials of `ranges` out of `candidates`; RangesNotHeld naming every uncovered part.

    Ranges must not overlap one another (the caller checks; an overlap would take a serial twice).
    """
    by_series: dict[tuple[str, str], list[BlockRow]] = {}
    for block in candidates:
        by_series.setdefault((block.ca_id, block.origin_registry_id), []).append(block)
    for series in by_series.values():
        series.sort(key=lambda b: b.first_serial)
    takes: list[Take] = []
    missing: list[SerialRange] = []
    for wanted in ranges:
        cursor = wanted.first
        for block in by_series.get((wanted.ca_id, wanted.origin_registry_id), []):
            if block.last_serial < cursor or block.first_serial > wanted.last:
                continue
            if block.first_serial > cursor:
                missing.append(replace(wanted, first=cursor, last=block.first_serial - 1))
            low, high = max(cursor, block.first_serial), min(wanted.last, block.last_serial)
            takes.append(Take(block, low, high))
            cursor = high + 1
            if cursor > wanted.last:
                break
        if cursor <= wanted.last:
            missing.append(replace(wanted, first=cursor))
    if missing:
        raise RangesNotHeld(missing)
    return takes


def move(takes: Sequence[Take], **changes: Any) -> tuple[list[BlockRow], list[BlockRow]]:
    """Split every taken block and give the taken pieces `changes` (state, account_id, party, ...).

    Returns `(rest, moved)`: `rest` holds what stays behind (with the source's id where one piece keeps
    the row), `moved` the taken pieces. A block taken whole keeps its id in `moved`; a partly taken one
    keeps its id for the piece that stays below or, failing that, above (so the row's start rarely moves).
    Several takes from one block (several ranges) are handled together.
    """
    by_block: dict[int, list[Take]] = {}
    order: list[int] = []
    for take in takes:
        key = id(take.block)
        if key not in by_block:
            by_block[key] = []
            order.append(key)
        by_block[key].append(take)
    rest: list[BlockRow] = []
    moved: list[BlockRow] = []
    for key in order:
        group = sorted(by_block[key], key=lambda t: t.first)
        block = group[0].block
        if len(group) == 1 and group[0].first == block.first_serial and group[0].last == block.last_serial:
            moved.append(block.piece(block.first_serial, block.last_serial, id=block.id, **changes))
            continue
        staying: list[tuple[int, int]] = []
        cursor = block.first_serial
        for take in group:
            if take.first > cursor:
                staying.append((cursor, take.first - 1))
            moved.append(block.piece(take.first, take.last, **changes))
            cursor = take.last + 1
        if cursor <= block.last_serial:
            staying.append((cursor, block.last_serial))
        for index, (low, high) in enumerate(staying):
            rest.append(block.piece(low, high, id=block.id if index == 0 else None))
        if not staying:  # taken whole in several adjacent pieces: the first moved piece keeps the row
            first_moved = len(moved) - len(group)
            moved[first_moved] = replace(moved[first_moved], id=block.id)
    return rest, moved


def can_merge(low: BlockRow, high: BlockRow) -> bool:
    """Whether `high` continues `low` exactly: adjacent serials, same attributes, contiguous underlying."""
    if low.last_serial + 1 != high.first_serial or low.attributes() != high.attributes():
        return False
    if low.underlying_first is None:
        return high.underlying_first is None
    return high.underlying_first is not None and low.underlying_last + 1 == high.underlying_first  # type: ignore[operator]


def coalesce(rows: Iterable[BlockRow]) -> list[BlockRow]:
    """Merge every run of mergeable rows; a merged row keeps the smallest existing id among its parts."""
    ordered = sorted(rows, key=lambda b: (b.ca_id, b.origin_registry_id, b.first_serial))
    result: list[BlockRow] = []
    for row in ordered:
        if result and can_merge(result[-1], row):
            previous = result[-1]
            ids = [i for i in (previous.id, row.id) if i is not None]
            result[-1] = replace(previous, last_serial=row.last_serial, id=min(ids) if ids else None)
        else:
            result.append(row)
    return result


@dataclass(frozen=True, slots=True)
class Change:
    """One row change for the journal and the writer: insert (before None), delete (after None) or update."""

    before: BlockRow | None
    after: BlockRow | None

    @property
    def kind(self) -> str:
        if self.before is None:
            return "insert"
        if self.after is None:
            return "delete"
        return "update"


def diff(originals: Iterable[BlockRow], final: Iterable[BlockRow]) -> list[Change]:
    """The row changes turning `originals` (rows with ids) into `final`, in a safe writing order.

    Order: deletes, then updates that shrink or keep a row's range, then updates that grow one, then
    inserts. Each statement then leaves no two rows overlapping, so PostgreSQL's immediate exclusion
    constraint and the unique start index never see a transient conflict.
    """
    before = {row.id: row for row in originals}
    assert None not in before, "originals must be stored rows"
    after_ids = set()
    shrinking: list[Change] = []
    growing: list[Change] = []
    inserts: list[Change] = []
    for row in final:
        if row.id is None:
            inserts.append(Change(None, row))
            continue
        after_ids.add(row.id)
        old = before.get(row.id)
        if old is None:
            raise ValueError(f"row {row.id} is not among the originals")
        if old == row:
            continue
        grows = row.first_serial < old.first_serial or row.last_serial > old.last_serial
        (growing if grows else shrinking).append(Change(old, row))
    deletes = [Change(row, None) for row_id, row in before.items() if row_id not in after_ids]
    return deletes + shrinking + growing + inserts


# ---- the serial-history rule of incoming transfers (INTERREGISTRY §6 step 6) ------------------------------

#: What a block carries unchanged wherever it goes (DESIGN §4): a returning range must bring them back as
#: they left (4005). The underlying mapping is compared by its offset (`same_invariants`).
INVARIANT_FIELDS = (
    "first_transferring_party",
    "vintage",
    "metric",
    "applicable_gwp_values",
    "applicable_non_ghg_metric",
    "conversion_factor",
    "mitigation_type",
    "sector",
    "activity_type",
    "authorization_id",
    "authorization_version",
    "purposes",
    "authorized_parties",
    "first_transfer_definition",
    "underlying_registry_id",
)
_HELD_STATES = frozenset({"held", "reserved", "pending_in"})
_USED_STATES = frozenset({"used_ndc", "used_oimp", "cancelled"})


def same_invariants(a: BlockRow, b: BlockRow) -> bool:
    """Whether two blocks of one series carry the same invariants, the underlying mapping included (the
    same underlying unit for every serial both cover)."""
    if any(getattr(a, name) != getattr(b, name) for name in INVARIANT_FIELDS):
        return False
    if a.underlying_first is None or b.underlying_first is None:
        return a.underlying_first is None and b.underlying_first is None
    return a.underlying_first - a.first_serial == b.underlying_first - b.first_serial


@dataclass(frozen=True, slots=True)
class HistoryVerdict:
    """What the IR's record says about an incoming block: the refusal codes (code, message), and when there
    are none, which serials are never seen (new blocks) and which return from `transferred_out`."""

    codes: list[tuple[int, str]]
    fresh: list[SerialRange]
    returning: list[SerialRange]

    @property
    def accepted(self) -> bool:
        return not self.codes


def serial_history(
    incoming: BlockRow, current: Iterable[BlockRow], *, registry_id: str, ir_origin: bool
) -> HistoryVerdict:
    """§6 step 6 for one incoming block against the current blocks of its (CA, origin registry).

    Accepted iff every serial is never seen at the IR (and the origin is not an IR section: the IR would
    have issued it, 4008), or lies in a block `transferred_out` to this same registry with identical
    invariants (a return). Otherwise per overlapped block: 4006 frozen; 4002 held, reserved or pending in
    the IR; 4003 used or cancelled; 4004 last sent to another registry; 4005 invariants differ. Every code
    that applies is collected (each once).
    """
    codes: dict[int, str] = {}
    fresh: list[SerialRange] = []
    returning: list[SerialRange] = []
    series = (incoming.ca_id, incoming.origin_registry_id)
    overlapping = sorted(
        (
            b
            for b in current
            if (b.ca_id, b.origin_registry_id) == series
            and b.first_serial <= incoming.last_serial
            and b.last_serial >= incoming.first_serial
        ),
        key=lambda b: b.first_serial,
    )
    cursor = incoming.first_serial
    for block in overlapping:
        low, high = (
            max(block.first_serial, incoming.first_serial),
            min(block.last_serial, incoming.last_serial),
        )
        if low > cursor:
            fresh.append(SerialRange(*series, cursor, low - 1))
        cursor = high + 1
        shown = f"{block.ca_id}-{block.origin_registry_id} {low}-{high}"
        if block.frozen_by is not None:
            codes.setdefault(4006, f"serials {shown} are frozen by a reconciliation")
        if block.state in _HELD_STATES:
            codes.setdefault(4002, f"serials {shown} are {block.state} in the IR")
        elif block.state in _USED_STATES:
            codes.setdefault(4003, f"serials {shown} are {block.state} in the IR")
        elif block.state == "transferred_out":
            if block.to_registry_id != registry_id:
                codes.setdefault(4004, f"serials {shown} last went to {block.to_registry_id}")
            elif not same_invariants(block, incoming):
                codes.setdefault(4005, f"serials {shown} left the IR with other invariants")
            elif block.frozen_by is None:
                returning.append(SerialRange(*series, low, high))
    if cursor <= incoming.last_serial:
        fresh.append(SerialRange(*series, cursor, incoming.last_serial))
    if fresh and ir_origin:
        shown = ", ".join(f"{r.first}-{r.last}" for r in fresh[:5])
        codes.setdefault(4008, f"{incoming.origin_registry_id} is an IR section that never issued {shown}")
    ordered = sorted(codes.items())
    if ordered:
        return HistoryVerdict(ordered, [], [])
    return HistoryVerdict([], fresh, returning)
