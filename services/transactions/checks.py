"""The check catalogue (`GET /v1/checks`) and the pure checks of a transaction (domain §7.2 T1–T11).

Codes are stable: never renumbered, never reused (tests/unit/test_ledger_checks.py snapshots them).
`evaluate()` takes everything it needs in a `CheckContext` (peer lookups and the units the transaction
would take, gathered by the service) and returns the failed checks; it does no I/O. The IRX response
codes the IR raises itself (INTERREGISTRY §7) are listed too, as numeric codes with `applies_to:
["interregistry"]`; `evaluate_outgoing()` adds those of a transfer to a connected registry (§5).
"""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from contracts.accounts import AccountStatus, AccountType
from contracts.actions import Purpose, TransactionType
from contracts.interregistry import CODE_CATALOGUE, MAX_TRANSFER_BLOCKS, CodeRaiser, IrxCode
from contracts.party_sections import AccountLookup, SectionLookup, SectionStatus
from contracts.problems import CheckResult
from contracts.transactions import CheckDefinition
from services.transactions.domain import BlockRow, SerialRange

__all__ = [
    "CATALOGUE",
    "CORRECTION",
    "DESTINATION_ACCOUNT_TYPE",
    "FIRST_TRANSFER",
    "IRX_CATALOGUE",
    "CheckContext",
    "Failures",
    "evaluate",
    "evaluate_correction",
    "evaluate_first_transfer",
    "evaluate_outgoing",
]

FIRST_TRANSFER = "first_transfer"
CORRECTION = "correction"
_MOVES = [t.value for t in TransactionType]
_TRANSFER = [TransactionType.TRANSFER.value]
_ALL = [*_MOVES, FIRST_TRANSFER]
_USES = [t.value for t in TransactionType if t is not TransactionType.TRANSFER]

#: Where each use or cancellation puts the units: the Party's own account of this type (domain §3.1).
DESTINATION_ACCOUNT_TYPE: dict[TransactionType, AccountType] = {
    TransactionType.USE_NDC: AccountType.NDC_USE,
    TransactionType.USE_OIMP: AccountType.OIMP_USE,
    TransactionType.CANCELLATION: AccountType.CANCELLATION,
    TransactionType.VOLUNTARY_CANCELLATION: AccountType.CANCELLATION,
    TransactionType.OMGE_CANCELLATION: AccountType.OMGE_CANCELLATION,
}


def _check(code: str, title: str, applies_to: list[str], reference: str | None = None) -> CheckDefinition:
    return CheckDefinition(code=code, title=title, applies_to=applies_to, reference=reference)


#: The published catalogue, in code order.
CATALOGUE: tuple[CheckDefinition, ...] = (
    _check("Q01", "Give a quantity or serial ranges", _MOVES),
    _check(
        "Q02",
        "Each range's first and last identifiers share CA, registry, Party and vintage, in order",
        _MOVES,
    ),
    _check("Q03", "Requested ranges do not overlap one another", _ALL, "T2"),
    _check(
        "Q04",
        "A transfer names a destination account other than the source; a use or cancellation none",
        _MOVES,
    ),
    _check("Q05", "ndc_use_year is given for use_ndc only", _MOVES),
    _check("A01", "The source account belongs to the caller's Party", _MOVES),
    _check("A02", "The source account exists and is open (not blocked or closed)", _MOVES),
    _check("A03", "The source account is a holding account", _MOVES, "T1"),
    _check("A04", "The source Party section is open (not suspended, closing or closed)", _ALL),
    _check("A05", "The destination account exists and is open", [*_TRANSFER, FIRST_TRANSFER]),
    _check("A06", "The destination account is a holding account", [*_TRANSFER, FIRST_TRANSFER]),
    _check("A07", "The Party has an open account of the type the use or cancellation needs", _USES),
    _check("T01", "The units are held, spendable, in the transferring account", _MOVES, "T1"),
    _check(
        "T02", "No serial is current in two places (ranges never seen before at first transfer)", _ALL, "T2"
    ),
    _check("T03", "No unit is used or cancelled twice", _MOVES, "T3"),
    _check(
        "T04",
        "First transfer only by the first transferring Party, from its own registry",
        [FIRST_TRANSFER],
        "T4",
    ),
    _check(
        "T05", "Purpose gating: NDC use needs an NDC authorization, OIMP use IMP, cancellation OP", _ALL, "T5"
    ),
    _check(
        "T05A",
        "The acquiring Party is among the authorization's authorized Parties",
        [*_TRANSFER, FIRST_TRANSFER],
        "T5",
    ),
    _check(
        "T06", "Cumulative first-transferred quantity within the authorized quantity", [FIRST_TRANSFER], "T6"
    ),
    _check(
        "T07",
        "Both Parties participate in the cooperative approach of every block",
        [*_TRANSFER, FIRST_TRANSFER],
        "T7",
    ),
    _check("T08", "Vintage from 2021 and not in the future", [FIRST_TRANSFER], "T8"),
    _check("T09", "The quantity equals the serial count", _ALL, "T9"),
    _check(
        "T10", "The destination Party section is open and accepts units", [*_TRANSFER, FIRST_TRANSFER], "T10"
    ),
    _check(
        "T11", "Four-eyes: approved by another principal of the Party with the approver role", _MOVES, "T11"
    ),
    _check("N01", "ndc_use_year lies within one of the Party's NDC implementation periods", ["use_ndc"]),
    _check(
        "F01",
        "The destination fits the first transfer definition (NDC: another Party; OIMP: own)",
        [FIRST_TRANSFER],
    ),
    _check("F02", "No frozen serial (inter-registry reconciliation)", [*_ALL, CORRECTION], "IRX 4006"),
    _check("C01", "A correction reverses a completed transfer", [CORRECTION], "domain A16"),
    _check("C02", "The transaction has no other correction pending or completed", [CORRECTION], "domain A16"),
    _check(
        "C03",
        "The units are still held, unreserved, in the account the transaction put them in",
        [CORRECTION],
        "domain A16",
    ),
    _check(
        "C04",
        "The account the units return to exists and neither it nor its Party section is closed",
        [CORRECTION],
        "domain A16",
    ),
    _check(
        "C05",
        "Dual control: approved by another Secretariat administrator than the one who proposed it",
        [CORRECTION],
        "domain A16",
    ),
)

#: The §7 codes the IR raises (its own checks and decisions), published beside the ledger's checks
#: (`GET /v1/checks`); a separate tuple, so the ledger's own catalogue keeps its order and snapshot.
IRX_CATALOGUE: tuple[CheckDefinition, ...] = tuple(
    _check(str(entry.code), entry.title, ["interregistry"], "IRX §7")
    for entry in CODE_CATALOGUE
    if entry.raised_by is not CodeRaiser.REGISTRY
)

_TITLES = {check.code: check.title for check in CATALOGUE + IRX_CATALOGUE}


class Failures:
    """Collects failed checks, each code once, in catalogue order."""

    def __init__(self) -> None:
        self._messages: dict[str, str] = {}

    def add(self, code: str, message: str | None = None) -> None:
        assert code in _TITLES, f"unknown check code {code}"
        self._messages.setdefault(code, message or _TITLES[code])

    def __bool__(self) -> bool:
        return bool(self._messages)

    def results(self) -> list[CheckResult]:
        order = {check.code: index for index, check in enumerate(CATALOGUE + IRX_CATALOGUE)}
        return [
            CheckResult(code=code, message=message)
            for code, message in sorted(self._messages.items(), key=lambda item: order[item[0]])
        ]


_OPEN_SECTIONS = frozenset({SectionStatus.OPEN})


@dataclass
class CheckContext:
    """What the checks of one transaction look at. `taken` is None when the units could not be selected."""

    type: TransactionType
    party: str
    from_account_id: str
    to_account_id: str | None
    from_account: AccountLookup | None
    to_account: AccountLookup | None
    section: SectionLookup | None
    quantity: int | None
    ranges: Sequence[SerialRange] = ()
    ranges_valid: bool = True
    ndc_use_year: int | None = None
    taken: Sequence[BlockRow] | None = None
    shortfall: str | None = None
    terminal_hit: bool = False
    ca_participants: dict[str, frozenset[str]] = field(default_factory=dict)
    #: A transfer to a connected registry: no IR destination account, and the destination checks are
    #: the IRX ones of `evaluate_outgoing` (3002, 5905, 5907, 4006) instead of A05/A06/T10/T05A/T07/F02.
    external: bool = False


def _purpose_allows(purpose: str, kind: TransactionType) -> bool:
    try:
        value = Purpose(purpose)
    except ValueError:
        return False
    if kind is TransactionType.USE_NDC:
        return value.covers_ndc
    if kind is TransactionType.USE_OIMP:
        return value.covers_imp
    if kind is TransactionType.CANCELLATION:
        return value.covers_op
    return True  # transfers, voluntary and OMGE cancellations: any authorization (domain §2.3)


def overlapping(ranges: Sequence[SerialRange]) -> bool:
    ordered = sorted(ranges, key=lambda r: (r.ca_id, r.origin_registry_id, r.first))
    return any(
        a.ca_id == b.ca_id and a.origin_registry_id == b.origin_registry_id and b.first <= a.last
        for a, b in itertools.pairwise(ordered)
    )


def evaluate(ctx: CheckContext) -> list[CheckResult]:
    """The failed checks of a transfer, use or cancellation (empty: it may go ahead)."""
    failed = Failures()
    kind = ctx.type
    # Request sanity.
    if ctx.quantity is None and not ctx.ranges and ctx.ranges_valid:
        failed.add("Q01")
    if not ctx.ranges_valid:
        failed.add("Q02")
    if ctx.ranges and overlapping(ctx.ranges):
        failed.add("Q03")
    if ctx.ranges and ctx.quantity is not None and ctx.quantity != sum(r.quantity for r in ctx.ranges):
        failed.add("T09", f"quantity {ctx.quantity} differs from the ranges' serial count")
    if kind is TransactionType.TRANSFER:
        if ctx.to_account_id is None or ctx.to_account_id == ctx.from_account_id:
            failed.add("Q04")
    elif ctx.to_account_id is not None:
        failed.add(
            "Q04", "a use or cancellation goes to the Party's own account of its type: omit to_account"
        )
    if (ctx.ndc_use_year is None) == (kind is TransactionType.USE_NDC):
        failed.add("Q05")
    # Source account and section (Party isolation first: nothing else is said about another's account).
    source = ctx.from_account
    if source is None or source.party != ctx.party:
        failed.add("A01", f"{ctx.from_account_id} is not an account of {ctx.party}")
        return failed.results()
    if source.status is not AccountStatus.OPEN:
        failed.add("A02", f"the source account is {source.status.value}")
    if source.type is not AccountType.HOLDING:
        failed.add("A03")
    if source.section_status not in _OPEN_SECTIONS:
        failed.add("A04", f"the Party section is {source.section_status.value}")
    # Destination.
    destination = ctx.to_account
    if ctx.external:
        pass
    elif kind is TransactionType.TRANSFER and ctx.to_account_id and ctx.to_account_id != ctx.from_account_id:
        if destination is None or destination.status is not AccountStatus.OPEN:
            failed.add("A05", f"{ctx.to_account_id} does not exist or is not open")
        else:
            if destination.type is not AccountType.HOLDING:
                failed.add("A06")
            if destination.section_status not in _OPEN_SECTIONS:
                failed.add("T10", f"the destination Party section is {destination.section_status.value}")
    elif kind is not TransactionType.TRANSFER and destination is None:
        wanted = DESTINATION_ACCOUNT_TYPE[kind]
        failed.add("A07", f"{ctx.party} has no open {wanted.value} account ({wanted.code})")
    # NDC use year.
    if kind is TransactionType.USE_NDC and ctx.ndc_use_year is not None:
        periods = ctx.section.ndc_periods if ctx.section else []
        if not any(p.first_year <= ctx.ndc_use_year <= p.last_year for p in periods):
            shown = ", ".join(f"{p.first_year}-{p.last_year}" for p in periods) or "none recorded"
            failed.add("N01", f"{ctx.ndc_use_year} is outside the NDC periods ({shown})")
    # The units.
    if ctx.terminal_hit:
        failed.add("T03", "some of the named units are already used or cancelled")
    if ctx.taken is None:
        if ctx.shortfall:
            failed.add("T01", ctx.shortfall)
        return failed.results()
    cross_party = (
        destination is not None and kind is TransactionType.TRANSFER and destination.party != ctx.party
    )
    for block in ctx.taken:
        if block.frozen_by is not None and not ctx.external:
            failed.add("F02", f"serials {block.first_serial}-{block.last_serial} of {block.ca_id} are frozen")
        if not _purpose_allows(block.purposes, kind):
            failed.add(
                "T05",
                f"authorization {block.authorization_id} ({block.purposes}) does not allow {kind.value}",
            )
        if cross_party and destination is not None:
            if block.authorized_parties and destination.party not in block.authorized_parties.split(","):
                failed.add(
                    "T05A", f"authorization {block.authorization_id} does not name {destination.party}"
                )
            participants = ctx.ca_participants.get(block.ca_id, frozenset())
            missing = sorted({ctx.party, destination.party} - participants)
            if missing:
                failed.add("T07", f"{', '.join(missing)} not participating in {block.ca_id}")
    return failed.results()


def evaluate_outgoing(
    ctx: CheckContext,
    *,
    registry_id: str,
    registry_party: str | None,
    registry_sendable: bool,
    registry_unresponsive: bool,
    block_count: int,
) -> list[CheckResult]:
    """The failed checks of a transfer to a connected registry (INTERREGISTRY §5): the ledger's catalogue
    on the source and the units, then the IRX codes — the registry may receive (3002), the acquiring Party
    (the registry's) participates in every block's CA (5905) and is among its authorized Parties (5907), no
    serial is frozen (4006), at most 10,000 blocks (2009)."""
    failed = Failures()
    for result in evaluate(ctx):
        failed.add(result.code, result.message)
    if registry_party is None or not registry_sendable:
        failed.add(str(int(IrxCode.RECEIVING_REGISTRY_NOT_ACTIVE)), f"{registry_id} cannot receive transfers")
    elif registry_unresponsive:
        failed.add(
            str(int(IrxCode.RECEIVING_REGISTRY_NOT_ACTIVE)),
            f"{registry_id} has left inbox messages unacknowledged for more than 24 h",
        )
    if ctx.taken is None or registry_party is None:
        return failed.results()
    if block_count > MAX_TRANSFER_BLOCKS:
        failed.add(str(int(IrxCode.TOO_MANY_BLOCKS)), f"{block_count} blocks; at most {MAX_TRANSFER_BLOCKS}")
    for block in ctx.taken:
        if block.frozen_by is not None:
            failed.add(
                str(int(IrxCode.UNITS_FROZEN)),
                f"serials {block.first_serial}-{block.last_serial} of {block.ca_id} are frozen",
            )
        if block.authorized_parties and registry_party not in block.authorized_parties.split(","):
            failed.add(
                str(int(IrxCode.NOT_AUTHORIZED_FOR_PARTY)),
                f"authorization {block.authorization_id} does not name {registry_party}",
            )
        missing = sorted({ctx.party, registry_party} - ctx.ca_participants.get(block.ca_id, frozenset()))
        if missing:
            failed.add(
                str(int(IrxCode.PARTY_NOT_PARTICIPATING)),
                f"{', '.join(missing)} not participating in {block.ca_id}",
            )
    return failed.results()


def evaluate_first_transfer(
    *,
    party: str,
    blocks: Sequence[BlockRow],
    destination: AccountLookup | None,
    destination_id: str | None,
    use_type: TransactionType | None,
    section: SectionLookup | None,
    ca_participants: dict[str, frozenset[str]],
    international: bool,
    seen_before: Sequence[SerialRange],
    current_year: int,
    authorized_quantity: int | None,
    already_first_transferred: int,
) -> list[CheckResult]:
    """The failed checks of a first transfer (the ARS's call); `international` for NDC first transfers."""
    failed = Failures()
    ranges = [SerialRange(b.ca_id, b.origin_registry_id, b.first_serial, b.last_serial) for b in blocks]
    if overlapping(ranges):
        failed.add("Q03")
    if seen_before:
        shown = ", ".join(f"{r.ca_id}-{r.origin_registry_id} {r.first}-{r.last}" for r in seen_before[:5])
        failed.add("T02", f"already first transferred: {shown}")
    for block in blocks:
        if block.first_transferring_party != party or block.origin_registry_id[:3] != party:
            failed.add("T04", f"{block.origin_registry_id} is not a registry of {party}")
        if block.vintage > current_year:
            failed.add("T08", f"vintage {block.vintage} is in the future")
    if section is None or section.status not in _OPEN_SECTIONS:
        failed.add("A04", f"the Party section of {party} is not open")
    if authorized_quantity is not None:
        total = already_first_transferred + sum(b.quantity for b in blocks)
        if total > authorized_quantity:
            failed.add("T06", f"{total} first transferred would exceed the authorized {authorized_quantity}")
    purposes = blocks[0].purposes if blocks else "NDC"
    if use_type is not None:
        if not _purpose_allows(purposes, use_type):
            failed.add("T05")
        if destination is None:
            wanted = DESTINATION_ACCOUNT_TYPE[use_type]
            failed.add("A07", f"{party} has no open {wanted.value} account ({wanted.code})")
        return failed.results()
    if destination is None or destination.status is not AccountStatus.OPEN:
        failed.add("A05", f"{destination_id} does not exist or is not open")
        return failed.results()
    if destination.type is not AccountType.HOLDING:
        failed.add("A06")
    if destination.section_status not in _OPEN_SECTIONS:
        failed.add("T10", f"the destination Party section is {destination.section_status.value}")
    if international != (destination.party != party):
        failed.add(
            "F01",
            "an NDC first transfer goes to another Party's account"
            if international
            else "an OIMP first transfer at authorization or issuance goes to the Party's own account",
        )
    if international and not Purpose(purposes).covers_ndc:
        failed.add("T05")
    if destination.party != party:
        authorized = blocks[0].authorized_parties if blocks else None
        if authorized and destination.party not in authorized.split(","):
            failed.add("T05A", f"the authorization does not name {destination.party}")
        for ca_id in sorted({b.ca_id for b in blocks}):
            missing = sorted({party, destination.party} - ca_participants.get(ca_id, frozenset()))
            if missing:
                failed.add("T07", f"{', '.join(missing)} not participating in {ca_id}")
    return failed.results()


def evaluate_correction(
    *,
    original_type: str,
    original_status: str,
    other_correction: str | None,
    taken: Sequence[BlockRow] | None,
    shortfall: str | None,
    back_to: AccountLookup | None,
    back_to_id: str | None,
    proposer_approves: bool = False,
) -> list[CheckResult]:
    """The failed checks of a correction (domain A16) reversing a transfer; `taken` None: units not there.

    At proposal `taken` is what would be reserved; at approval, what is reserved, and `proposer_approves`
    says whether the approving administrator is the one who proposed it (C05).
    """
    failed = Failures()
    if proposer_approves:
        failed.add("C05", "the administrator who proposed the correction cannot approve it")
    if original_type != TransactionType.TRANSFER.value or original_status != "completed":
        failed.add("C01", f"the transaction is a {original_status} {original_type}")
        return failed.results()
    if other_correction is not None:
        failed.add("C02", f"{other_correction} already corrects it")
    if taken is None:
        failed.add("C03", shortfall)
    else:
        for block in taken:
            if block.frozen_by is not None:
                failed.add(
                    "F02", f"serials {block.first_serial}-{block.last_serial} of {block.ca_id} are frozen"
                )
    if (
        back_to is None
        or back_to.status is AccountStatus.CLOSED
        or back_to.section_status is SectionStatus.CLOSED
    ):
        failed.add("C04", f"{back_to_id} does not exist or is closed")
    return failed.results()
