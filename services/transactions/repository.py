"""Queries of the transactions service (SQLAlchemy Core: the hot paths skip the ORM, DESIGN §2)."""

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from contracts.transactions import AccountBalance, PartyBalance
from services.transactions.models import blocks, transactions

__all__ = ["BALANCE_STATES", "account_balance", "party_balance", "transaction_row"]

#: States that still count in an account's balance: an account or a section may close only when it is 0.
BALANCE_STATES = ("held", "reserved", "pending_in")

_QUANTITY = func.sum(blocks.c.last_serial - blocks.c.first_serial + 1)

Executor = AsyncSession | AsyncConnection


async def account_balance(executor: Executor, account_id: str) -> AccountBalance:
    rows = (
        await executor.execute(
            select(blocks.c.state, _QUANTITY)
            .where(blocks.c.account_id == account_id, blocks.c.state.in_(BALANCE_STATES))
            .group_by(blocks.c.state)
        )
    ).all()
    by_state: dict[str, int] = {state: int(quantity or 0) for state, quantity in rows}
    held, reserved, pending = (by_state.get(state, 0) for state in BALANCE_STATES)
    return AccountBalance(
        account_id=account_id,
        held=held,
        reserved=reserved,
        pending_in=pending,
        total=held + reserved + pending,
    )


async def party_balance(executor: Executor, party: str) -> PartyBalance:
    rows: Any = (
        await executor.execute(
            select(blocks.c.account_id, _QUANTITY)
            .where(blocks.c.party == party, blocks.c.state.in_(BALANCE_STATES))
            .group_by(blocks.c.account_id)
        )
    ).all()
    accounts = {account: int(quantity) for account, quantity in rows if account is not None and quantity}
    return PartyBalance(party=party, total=sum(accounts.values()), accounts=dict(sorted(accounts.items())))


async def transaction_row(executor: Executor, transaction_id: str) -> dict[str, Any] | None:
    """The `transactions` row of `transaction_id` as a dict, or None when there is none."""
    query = select(transactions).where(transactions.c.transaction_id == transaction_id)
    row = (await executor.execute(query)).mappings().one_or_none()
    return dict(row) if row is not None else None
