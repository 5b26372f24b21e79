"""One conformance run end to end: read the registry record (the kit runs in the sandbox only), gather the
registry's public keys, note where the message log is, run the selected cases in number order with the
hygiene check after each, and return the report (INTERREGISTRY §11).
"""

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import httpx

from conformance.kit import cases as _cases  # noqa: F401  (registers the implemented cases)
from conformance.kit import reconciliation_cases as _reconciliation_cases  # noqa: F401  (300–304)
from conformance.kit import transfer_cases as _transfer_cases  # noqa: F401  (registers 150–172)
from conformance.kit import webhook_cases as _webhook_cases  # noqa: F401  (400)
from conformance.kit.config import ConfigError, KitConfig
from conformance.kit.driver import Driver, OperatorDriver
from conformance.kit.report import Report
from conformance.kit.runner import CASES, RunState, run_case
from conformance.kit.session import KitFailure, RegistrySession, wire_time

__all__ = ["RunRefused", "run_kit"]


class RunRefused(ConfigError):
    """The run must not start (a production record, an unknown case number)."""


def _keys_of(document: object) -> dict[str, dict]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        return {}
    return {str(key["kid"]): key for key in document["keys"] if isinstance(key, dict) and key.get("kid")}


async def _published_keys(url: str, seconds: float) -> dict[str, dict]:
    """The registry's keys at its jwks_url, if the kit can reach it (it is the registry's own server)."""
    try:
        async with httpx.AsyncClient(timeout=seconds, follow_redirects=False) as client:
            response = await client.get(url)
        return _keys_of(response.json()) if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}


async def _preflight(session: RegistrySession, state: RunState) -> dict:
    config = session.config
    notes: dict = {}
    state.registry_keys.update(_keys_of(config.trusted_jwks()))
    try:
        state.record = await session.record()
    except KitFailure as exc:
        notes["record"] = f"unreadable: {exc}"
    if state.record is not None and "environment" not in state.record:
        # Only the public fields: the IR does not see this client as the registry itself.
        notes["record"] = f"only the public fields of {config.registry_id}: the client is not this registry's"
        state.record = None
    if state.record is not None:
        environment = state.record.get("environment")
        if environment != "sandbox":
            raise RunRefused(
                f"registry {config.registry_id} is a {environment!r} record: the kit runs against the sandbox only"
            )
        notes["record"] = {
            name: state.record.get(name)
            for name in ("status", "signing", "environment", "jwks_url", "version")
        }
        state.registry_keys.update(_keys_of(state.record.get("jwks")))
        if state.record.get("jwks_url"):
            state.registry_keys.update(
                await _published_keys(str(state.record["jwks_url"]), config.http_timeout)
            )
    if config.rotation_jwks_file is not None and config.rotation_jwks_file.exists():
        try:
            state.registry_keys.update(_keys_of(json.loads(config.rotation_jwks_file.read_text())))
        except ValueError:
            notes["rotation_jwks_file"] = "not JSON"
    notes["registry_kids"] = sorted(state.registry_keys)
    try:
        entries = await session.message_log(after=0)
    except KitFailure as exc:
        state.log_problem = str(exc)
        notes["message_log"] = f"unreadable: {exc}"
    else:
        state.log_cursor = max((int(entry["log_id"]) for entry in entries), default=0)
        state.last_logged_seq = max((int(entry["seq"]) for entry in entries if entry.get("seq")), default=0)
        notes["message_log"] = {"registry_messages": len(entries), "last_seq": state.last_logged_seq}
    return notes


async def run_kit(
    config: KitConfig,
    *,
    http: httpx.AsyncClient | None = None,
    cases: Iterable[int] | None = None,
    driver_http: httpx.AsyncClient | None = None,
) -> Report:
    """Run `cases` (default: every §11 case) as `config` says; `http` is a client whose base URL is the IR
    gateway (tests pass an in-process one), else one is made for `config.ir_url`; `driver_http` likewise
    for the registry's test driver at `config.driver_url`."""
    selected = sorted(set(cases) if cases is not None else CASES)
    unknown = [number for number in selected if number not in CASES]
    if unknown:
        raise RunRefused(
            f"no such case: {', '.join(map(str, unknown))}; known: {', '.join(map(str, sorted(CASES)))}"
        )
    report = Report(
        conformance_run_id=str(uuid.uuid4()),
        mode=config.mode,
        ir_url=config.ir_url,
        registry_id=config.registry_id,
        driver_url=config.driver_url,
        started_at=wire_time(datetime.now(UTC)),
    )
    owned = http is None
    client = http or httpx.AsyncClient(base_url=config.ir_url, timeout=config.http_timeout)
    state = RunState()
    try:
        session = RegistrySession(config, client)
        if config.driver_url:
            state.driver = Driver(config.driver_url, session, timeout=config.http_timeout, http=driver_http)
        elif config.operator is not None:
            state.driver = OperatorDriver(config.operator, session, timeout=config.operator_timeout)
        report.preflight = await _preflight(session, state)
        for number in selected:
            report.cases.append(await run_case(CASES[number], session, state))
        report.finished_at = wire_time(datetime.now(UTC))
        if config.store:
            report.stored = await _store(session, report)
    finally:
        if state.driver is not None:
            await state.driver.close()
        if owned:
            await client.aclose()
    return report


async def _store(session: RegistrySession, report: Report) -> dict:
    """Post the report to the IR, which judges it against its own record of the run (docs/conformance.md);
    its answer (the IR's `result` and `findings`), or why it could not be stored."""
    try:
        answer = await session.request(
            "POST",
            "/v1/interregistry/conformance-runs",
            json=report.as_json(),
            headers=await session.headers(),
        )
    except KitFailure as exc:
        return {"stored": False, "error": str(exc)}
    if answer.status_code != 201:
        return {"stored": False, "error": f"{answer.status_code} {answer.text[:500]}"}
    document: dict = answer.json()
    return {"stored": True, **document}
