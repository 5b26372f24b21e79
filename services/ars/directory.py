"""What party_sections knows, read over its internal API as this service (kit.service_client), and the
connected registries' public records, which the transactions service keeps.

Reads happen before a write transaction opens, never inside one: no database lock is held across HTTP.
"""

from typing import Any

import httpx
import structlog

from contracts.accounts import AccountStatus, AccountType
from contracts.interregistry import RegistryPublic
from contracts.party_sections import AccountLookup, AuthorizedEntity, CooperativeApproach, SectionLookup
from kit.errors import DomainError, ServiceUnavailable
from kit.service_client import Peers

__all__ = ["Directory"]

log = structlog.get_logger(__name__)


def _account_order(account: AccountLookup) -> tuple[int, str]:
    tail = account.account_id.rsplit("-", 1)[-1]
    return (int(tail) if tail.isdigit() else 0, account.account_id)


class Directory:
    def __init__(self, peers: Peers) -> None:
        self.peers = peers

    async def _get(self, path: str, **params: Any) -> httpx.Response | None:
        response = await self.peers.request("party_sections", "GET", path, params=params or None)
        if response.status_code == 200:
            return response
        if response.status_code in (401, 403):
            log.error("party_sections_refused", path=path, status=response.status_code)
            raise DomainError("party_sections refused this service's token", slug="upstream-refused")
        return None

    async def section(self, party: str) -> SectionLookup | None:
        response = await self._get(f"/internal/v1/party-sections/{party}")
        return SectionLookup.model_validate(response.json()) if response else None

    async def cooperative_approach(self, ca_id: str) -> CooperativeApproach | None:
        response = await self._get(f"/internal/v1/cooperative-approaches/{ca_id}")
        return CooperativeApproach.model_validate(response.json()) if response else None

    async def entity(self, party: str, entity_id: str) -> AuthorizedEntity | None:
        """An entity the Party authorized (Table 5), None if it has none of that id."""
        response = await self._get(f"/internal/v1/party-sections/{party}/entities/{entity_id}")
        return AuthorizedEntity.model_validate(response.json()) if response else None

    async def account(self, account_id: str) -> AccountLookup | None:
        response = await self._get(f"/internal/v1/accounts/{account_id}")
        return AccountLookup.model_validate(response.json()) if response else None

    async def holding_account(self, party: str) -> AccountLookup | None:
        """The Party's own open holding account with the lowest number (not an entity's)."""
        response = await self._get(
            f"/internal/v1/party-sections/{party}/accounts", type=AccountType.HOLDING.value
        )
        if response is None:
            return None
        accounts = [AccountLookup.model_validate(item) for item in response.json()]
        usable = [
            a
            for a in accounts
            if a.status is AccountStatus.OPEN and a.holder_entity_id is None and a.party == party
        ]
        return min(usable, key=_account_order) if usable else None

    async def registry(self, registry_id: str) -> RegistryPublic | None:
        """A connected national registry's public record (INTERREGISTRY §2.1), None if the IR has none."""
        try:
            response = await self.peers.request(
                "transactions", "GET", f"/v1/interregistry/registries/{registry_id}"
            )
        except Exception as exc:  # unreachable or timed out: nothing is reserved on a guess
            raise ServiceUnavailable("The transactions service did not answer a registry lookup.") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            log.error("registry_lookup_failed", registry_id=registry_id, status=response.status_code)
            raise ServiceUnavailable("The transactions service did not answer a registry lookup.")
        return RegistryPublic.model_validate(response.json())
