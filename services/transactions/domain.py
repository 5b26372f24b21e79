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
    "BlockRow",
    "Change",
    "InsufficientUnits",
    "RangesNotHeld",
    "SerialRange",
    "Take",
    "can_merge",
    "coalesce",
    "diff",
    "move",
    "order_key",
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
