"""Wire models of the transactions service that other services read (internal balances for now).

The public transaction, block and holdings models arrive with the ledger (API.md "Transactions and
holdings"); these two are what party_sections asks before closing an account or a section.
"""

from pydantic import BaseModel, Field

from contracts.parties import PartyCode

__all__ = ["AccountBalance", "PartyBalance"]


class AccountBalance(BaseModel):
    """`GET /internal/v1/accounts/{account_id}/balance`: units still in the account, by state (0 if none)."""

    account_id: str
    held: int = Field(ge=0)
    reserved: int = Field(ge=0, description="Held but reserved by a pending transaction")
    pending_in: int = Field(ge=0, description="Arriving from a connected registry, not yet spendable")
    total: int = Field(ge=0, description="held + reserved + pending_in: an account may close only at 0")


class PartyBalance(BaseModel):
    """`GET /internal/v1/party-sections/{party}/balance`: what a section still holds, per account."""

    party: PartyCode
    total: int = Field(ge=0)
    accounts: dict[str, int] = Field(default_factory=dict, description="Non-zero totals by account id")
