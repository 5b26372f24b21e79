"""Use cases of the party_sections service."""

from contracts.pagination import Page
from contracts.parties import Party, all_parties

__all__ = ["list_parties"]


def list_parties(*, limit: int, after: str | None) -> Page[Party]:
    """Parties in code order, after the code `after` (the reference list is in memory)."""
    from kit.pagination import page_of

    parties = [party for party in all_parties() if after is None or party.code > after]
    return page_of(parties[: limit + 1], limit=limit, key=lambda party: {"code": party.code})
