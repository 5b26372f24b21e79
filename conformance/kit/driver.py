"""The registry's optional test driver (INTERREGISTRY §11) as the kit calls it, and the IR's sandbox-only
endpoints (`/v1/interregistry/sandbox/…`) with the registry's token: the two levers of the transfer cases.

Driver calls are kept as evidence like IR exchanges, with the path prefixed `driver:`. The driver is the
registry's own instrument (`POST …/conformance/v1/propose`, `…/policy`, `GET …/units`); the reference
simulator adds `issue` (units of its own origin, case 160/164) and `restore-drill` (case 172), which the
kit uses when they answer and otherwise reports the check skipped.
"""

import asyncio
import json
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from conformance.kit.runner import CaseSkipped
from conformance.kit.session import Exchange, KitFailure, RegistrySession

__all__ = ["Ask", "Driver", "OperatorDriver", "Sandbox", "terminal_operator", "wait_for"]

#: How the kit asks the operator something and gets the answer line (§11 without a driver).
Ask = Callable[[str], Awaitable[str]]
#: §11: without a driver the kit waits up to 10 min for each answer.
OPERATOR_TIMEOUT = 600.0
_UNIT_STATES = ("held", "pending_in", "transferred_out", "absent")

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

    #: Answers at once: the cases poll it until a state shows.
    interactive = False

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
        self.session.note("transfers", document.get("transfer_id"))
        return document

    async def reconciliation_policy(self, answer: bool) -> bool:
        """Have the registry answer reconciliation requests, or stay silent (cases 301, 304); False when
        the driver has no such lever (a simulator extra)."""
        done = await self.optional("reconciliation-policy", policy="answer" if answer else "silent")
        return done is not None

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
        self.session.note("transfers", document.get("transfer_id"))
        return document

    async def outgoing_answer(self, **body: Any) -> httpx.Response:
        """The sandbox outgoing as answered, refusals included (a use of frozen units, case 302)."""
        return await self._post("outgoing", {"registry_id": self.registry_id, **body})

    async def phantom(self, **body: Any) -> list[str]:
        """Fault `phantom_transfer`: completed outgoing transfers the registry never sees (case 302)."""
        answer = await self._post(
            "faults", {"registry_id": self.registry_id, "fault": "phantom_transfer", "count": 1, **body}
        )
        if answer.status_code != 200:
            raise KitFailure(f"sandbox phantom_transfer: {answer.status_code} {answer.text[:300]}")
        made = [str(i) for i in answer.json().get("phantom_transfers") or []]
        for transfer_id in made:
            self.session.note("transfers", transfer_id)
        return made

    async def sink(self, **body: Any) -> dict[str, Any] | None:
        """Units of the test section sent, completed, to the sandbox's sink registry (case 162's 4004): the
        answer has their blocks as proposed. None when this IR has no sink lever. The sink's transfer is not
        the registry's, so it is no subject of the case."""
        answer = await self._post("sink", {"registry_id": self.registry_id, **body})
        if answer.status_code in (404, 405):
            return None
        if answer.status_code != 201:
            raise KitFailure(f"sandbox sink: {answer.status_code} {answer.text[:300]}")
        document: dict[str, Any] = answer.json()
        return document

    async def start_reconciliation(self) -> dict[str, Any]:
        """A reconciliation started by the IR, as its daily schedule would (cases 300, 302–304)."""
        answer = await self._post("reconciliations", {"registry_id": self.registry_id})
        if answer.status_code != 201:
            raise KitFailure(f"sandbox reconciliation start: {answer.status_code} {answer.text[:300]}")
        document: dict[str, Any] = answer.json()
        self.session.note("reconciliations", document.get("reconciliation_id"))
        return document

    async def expire_reconciliation(self, reconciliation_id: str) -> dict[str, Any]:
        answer = await self._post(f"reconciliations/{reconciliation_id}/expire")
        if answer.status_code != 200:
            raise KitFailure(f"sandbox reconciliation expire: {answer.status_code} {answer.text[:300]}")
        document: dict[str, Any] = answer.json()
        return document

    async def resolve_reconciliation(self, reconciliation_id: str, note: str) -> dict[str, Any]:
        answer = await self._post(f"reconciliations/{reconciliation_id}/resolve", {"note": note})
        if answer.status_code != 200:
            raise KitFailure(f"sandbox reconciliation resolve: {answer.status_code} {answer.text[:300]}")
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


class OperatorDriver:
    """§11 without a test driver: the kit prints each instruction or question for the registry's operator
    and waits up to 10 min for the answer line (DES Annex H tests were coordinated by hand). The same levers
    as `Driver`; the simulator's extras (`issue`, `restore-drill`, `forget`) are not asked of a person, so the
    cases that need them are skipped or take their other path. Every question and answer is evidence."""

    interactive = True

    def __init__(self, ask: Ask, session: RegistrySession, timeout: float = OPERATOR_TIMEOUT) -> None:
        self.ask = ask
        self.session = session
        self.timeout = timeout

    async def close(self) -> None:
        return None

    async def _ask(self, text: str) -> str:
        try:
            answer = await asyncio.wait_for(self.ask(text), timeout=self.timeout)
        except TimeoutError:
            self.session.exchanges.append(Exchange("ASK", f"operator:{text[:300]}", 408))
            raise CaseSkipped(
                f"no answer from the operator within {self.timeout:.0f} s to: {text[:200]}"
            ) from None
        self.session.exchanges.append(Exchange("ASK", f"operator:{text[:300]} → {answer.strip()[:200]}", 200))
        return answer.strip()

    async def policy(self, policy: str) -> None:
        await self._ask(
            f"Set your registry's answer to incoming transfer proposals to `{policy}` (accept: accept them; "
            "silent: read them and keep the units pending_in without answering; reject:<code>: reject them). "
            "Press Enter once it is set."
        )

    async def propose(self, **body: Any) -> dict[str, Any]:
        transfer_id = await self._ask(
            f"Have your registry propose this transfer to the IR: {json.dumps(body, sort_keys=True)}. "
            "Enter its transfer id once it is sent:"
        )
        if not transfer_id:
            raise KitFailure("the operator gave no transfer id")
        self.session.note("transfers", transfer_id)
        return {"transfer_id": transfer_id}

    async def units(self, first: str, last: str | None = None) -> dict[str, Any]:
        answer = await self._ask(
            f"What does your registry hold of units {first} … {last or first}? Answer `STATE HELD`: STATE the "
            f"state of the first serial ({', '.join(_UNIT_STATES)}), HELD how many serials of the range are held:"
        )
        parts = answer.split()
        if not parts or parts[0] not in _UNIT_STATES or (len(parts) > 1 and not parts[1].isdigit()):
            raise KitFailure(f"the operator's answer {answer[:100]!r} is not `STATE HELD`")
        return {"state": parts[0], "quantity_held_in_range": int(parts[1]) if len(parts) > 1 else 0}

    async def optional(self, path: str, **body: Any) -> dict[str, Any] | None:
        return None

    async def reconciliation_policy(self, answer: bool) -> bool:
        await self._ask(
            "Let your registry answer reconciliation requests again (it answers any it held back). Press Enter."
            if answer
            else "Stop your registry from answering reconciliation requests (it keeps reading its inbox). "
            "Press Enter once it is silent."
        )
        return True

    async def restart(self) -> None:
        await self._ask("Restart your registry process now. Press Enter once it serves again.")


def terminal_operator(stream: Any = None, out: Any = None) -> Ask:
    """An `Ask` on the terminal: print the question, read one line. The line is read on a daemon thread, so
    a question nobody answers never keeps the process from exiting after the kit gave up on it."""
    source = stream or sys.stdin
    target = out or sys.stdout
    lines: asyncio.Queue[str] | None = None

    def reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str]) -> None:
        for line in iter(source.readline, ""):
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, "")

    async def ask(question: str) -> str:
        nonlocal lines
        if lines is None:
            lines = asyncio.Queue()
            threading.Thread(
                target=reader, args=(asyncio.get_running_loop(), lines), name="kit-operator", daemon=True
            ).start()
        print(f"\n[conformance] {question}", file=target, flush=True)
        return (await lines.get()).rstrip("\n")

    return ask
