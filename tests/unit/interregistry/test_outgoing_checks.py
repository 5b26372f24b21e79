"""The IRX checks of an outgoing transfer (`checks.evaluate_outgoing`, INTERREGISTRY §5) that the
integration tests cannot reach cheaply: 2009 needs more than 10,000 blocks; and the ledger's destination
checks stay out of the way of a transfer to a connected registry."""

from contracts.actions import TransactionType
from services.transactions import checks
from services.transactions.checks import CheckContext
from services.transactions.domain import BlockRow


def _context(taken: list[BlockRow]) -> CheckContext:
    return CheckContext(
        type=TransactionType.TRANSFER,
        party="GHA",
        from_account_id="GHA01-100-1",
        to_account_id="CH-100-77",
        from_account=None,
        to_account=None,
        section=None,
        quantity=None,
        taken=taken,
        ca_participants={"CA0012": frozenset({"GHA", "CHE"})},
        external=True,
    )


def _codes(taken: list[BlockRow], **registry: object) -> list[str]:
    arguments: dict = {
        "registry_id": "CHE01",
        "registry_party": "CHE",
        "registry_sendable": True,
        "registry_unresponsive": False,
        "block_count": len(taken),
    } | registry
    return [c.code for c in checks.evaluate_outgoing(_context(taken), **arguments)]


ROW = BlockRow(
    "CA0012", "GHA01", "GHA", 1, 1, 2024, "GHG", "Emission reductions", "A-1", 1, "NDC", "held", "GHA"
)


def test_more_than_ten_thousand_blocks_is_2009() -> None:
    codes = _codes([ROW], block_count=10_001)
    assert "2009" in codes and "A05" not in codes and "T07" not in codes


def test_registry_codes() -> None:
    assert "3002" in _codes([ROW], registry_sendable=False)
    assert "3002" in _codes([ROW], registry_unresponsive=True)
    assert "5905" in _codes([ROW], registry_party="NOR")
    frozen = BlockRow(
        **{**{k: v for k, v in ROW.columns().items() if k != "underlying_last"}, "frozen_by": "r"}
    )
    assert "4006" in _codes([frozen]) and "F02" not in _codes([frozen])
    named = BlockRow(
        **{**{k: v for k, v in ROW.columns().items() if k != "underlying_last"}, "authorized_parties": "SWE"}
    )
    assert "5907" in _codes([named]) and "T05A" not in _codes([named])
    assert {c.code for c in checks.IRX_CATALOGUE} >= {"3002", "4006", "5905", "5907", "2009", "6001", "6003"}
