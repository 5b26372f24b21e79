"""The registry's optional test driver (INTERREGISTRY §11) as the kit calls it, and the IR's sandbox-only
endpoints (`/v1/interregistry/sandbox/…`) with the registry's token: the two levers of the transfer cases.

Driver calls are kept as evidence like IR exchanges, with the path prefixed `driver:`. The driver is the
registry's own instrument (`POST …/conformance/v1/propose`, `…/policy`, `GET …/units`); the reference
simulator adds `issue` (units of its own origin, case 160/164) and `restore-drill` (case 172), which the
kit uses when they answer and otherwise reports the check skipped.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from conformance.kit.session import Exchange, KitFailure, RegistrySession

__all__ = ["Driver", "Sandbox", "wait_for"]

_SANDBOX = "/v1/interregistry/sandbox"


async def wait_for(
    probe: Callable[[], Awaitable[Any]], *, seconds: float, interval: float = 0.2
) -> tuple[bool, Any]:
    """Call `probe` until it returns something truthy or `seconds` pass; (done, last value)."""
    deadline = time.monotonic() + seconds
    value: Any = None
    while True:
        value = await probe()
        if value:
            return True, value
        if time.monotonic() >= deadline:
            return False, value
        await asyncio.sleep(interval)


class Driver:
    """`{driver_url}/conformance/v1/…` of the registry under test."""

    def __init__(
        self, url: str, session: RegistrySession, timeout: float = 30.0, http: httpx.AsyncClient | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.session = session
        self._owned = http is None
        self.http = http or httpx.AsyncClient(base_url=self.url, timeout=timeout)

    async def close(self) -> None:
        if self._owned:
            await self.http.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, f"/conformance/v1/{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise KitFailure(f"the registry's test driver did not answer {method} {path}: {exc}") from None
        self.session.exchanges.append(
            Exchange(method, f"driver:/conformance/v1/{path}", response.status_code)
        )
        return response

    async def policy(self, policy: str) -> None:
        answer = await self.call("POST", "policy", json={"policy": policy})
        if answer.status_code != 200:
            raise KitFailure(f"driver policy {policy}: {answer.status_code} {answer.text[:200]}")

    async def propose(self, **body: Any) -> dict[str, Any]:
        answer = await self.call("POST", "propose", json=body)
        if answer.status_code != 201:
            raise KitFailure(f"driver propose: {answer.status_code} {answer.text[:300]}")
        document: dict[str, Any] = answer.json()
        return document

    async def units(self, first: str, last: str | None = None) -> dict[str, Any]:
        params = {"unique_id": first, **({"unique_id_last": last} if last else {})}
        answer = await self.call("GET", "units", params=params)
        if answer.status_code != 200:
            raise KitFailure(f"driver units: {answer.status_code} {answer.text[:200]}")
        document: dict[str, Any] = answer.json()
        return document

    async def optional(self, path: str, **body: Any) -> dict[str, Any] | None:
        """A simulator extra (`issue`, `restore-drill`): None when the driver does not serve it."""
        answer = await self.call("POST", path, json=body)
        if answer.status_code in (404, 405):
            return None
        if answer.status_code >= 300:
            raise KitFailure(f"driver {path}: {answer.status_code} {answer.text[:300]}")
        document: dict[str, Any] = answer.json()
        return document


class Sandbox:
    """The IR's sandbox-only endpoints, called with the registry's own token."""

    def __init__(self, session: RegistrySession) -> None:
        self.session = session
        self.registry_id = session.config.registry_id

    async def _post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return await self.session.request(
            "POST", f"{_SANDBOX}/{path}", json=body or {}, headers=await self.session.headers()
        )

    async def outgoing(self, **body: Any) -> dict[str, Any]:
        answer = await self._post("outgoing", {"registry_id": self.registry_id, **body})
        if answer.status_code == 404:
            raise KitFailure("the IR serves no sandbox endpoints here (404): is this the sandbox?")
        if answer.status_code != 201:
            raise KitFailure(f"sandbox outgoing: {answer.status_code} {answer.text[:400]}")
        document: dict[str, Any] = answer.json()
        return document

    async def expire(self, transfer_id: str) -> dict[str, Any]:
        answer = await self._post(f"transfers/{transfer_id}/expire")
        if answer.status_code != 200:
            raise KitFailure(f"sandbox expire: {answer.status_code} {answer.text[:300]}")
        document: dict[str, Any] = answer.json()
        return document

    async def cancel(self, transfer_id: str) -> httpx.Response:
        return await self._post(f"transfers/{transfer_id}/cancel")

    async def fault(self, fault: str, count: int = 1, message_type: str | None = None) -> None:
        body: dict[str, Any] = {"registry_id": self.registry_id, "fault": fault, "count": count}
        if message_type:
            body["message_type"] = message_type
        answer = await self._post("faults", body)
        if answer.status_code != 200:
            raise KitFailure(f"sandbox fault {fault}: {answer.status_code} {answer.text[:300]}")

    async def faults(self) -> dict[str, Any]:
        answer = await self.session.get(f"{_SANDBOX}/faults", registry_id=self.registry_id)
        if answer.status_code != 200:
            raise KitFailure(f"sandbox faults: {answer.status_code} {answer.text[:300]}")
        document: dict[str, Any] = answer.json()
        return document

    async def units(self, first: str, last: str) -> dict[str, Any]:
        answer = await self.session.get(
            f"{_SANDBOX}/units", registry_id=self.registry_id, unique_id=first, unique_id_last=last
        )
        if answer.status_code != 200:
            raise KitFailure(f"sandbox units: {answer.status_code} {answer.text[:300]}")
        document: dict[str, Any] = answer.json()
        return document

    async def actions(self, transfer_id: str) -> dict[str, Any]:
        answer = await self.session.get(f"{_SANDBOX}/transfers/{transfer_id}/actions")
        if answer.status_code != 200:
            raise KitFailure(f"sandbox actions: {answer.status_code} {answer.text[:300]}")
        document: dict[str, Any] = answer.json()
        return document
