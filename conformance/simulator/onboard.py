"""Connect a simulator to a running IR in one step (what `make simulator` does beside `make run`).

With the Secretariat's bootstrap client (`make run` prints its id; its secret is `var/bootstrap-client-secret`)
it makes the registry record exist in the sandbox with the simulator's public key inline (or naming the
simulator's own `/.well-known/jwks.json` as `jwks_url`, `--publish-jwks-url`), moves it to
`active` (test → activate; a sandbox registry needs no conformance run), and creates a `registry` client
whose credentials the caller keeps (`__main__` in the simulator's data directory, mode 0600). Running it again reuses what exists: a record
whose keys differ is PATCHed (If-Match), a suspended one stays suspended, stored credentials that still get a
token are kept.
"""

from typing import Any

import httpx

__all__ = ["OnboardingFailed", "load_or_onboard", "onboard_registry"]


class OnboardingFailed(RuntimeError):
    """The IR refused a step; the message has its answer."""


def _check(response: httpx.Response, *expected: int) -> dict[str, Any]:
    if response.status_code not in expected:
        raise OnboardingFailed(
            f"{response.request.method} {response.request.url.path} answered {response.status_code}: {response.text[:500]}"
        )
    return response.json() if response.content else {}


async def _token(client: httpx.AsyncClient, client_id: str, secret: str) -> str | None:
    response = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    if response.status_code != 200:
        return None
    token: str = response.json()["access_token"]
    return token


async def onboard_registry(
    client: httpx.AsyncClient,
    *,
    admin_id: str,
    admin_secret: str,
    registry_id: str,
    jwks: dict[str, Any],
    name: str | None = None,
    jwks_url: str | None = None,
) -> None:
    """Make the sandbox registry record exist, carry `jwks` (or, with `jwks_url`, name that URL and carry no
    inline keys: the IR verifies with inline keys first, so a record with both could never rotate), and be
    `active`."""
    keys: dict[str, Any] = (
        {"jwks": None, "jwks_url": jwks_url} if jwks_url else {"jwks": jwks, "jwks_url": None}
    )
    token = await _token(client, admin_id, admin_secret)
    if token is None:
        raise OnboardingFailed(f"the bootstrap client {admin_id} got no token: check its secret")
    headers = {"Authorization": f"Bearer {token}"}
    path = f"/v1/interregistry/registries/{registry_id}"
    found = await client.get(path, headers=headers)
    if found.status_code == 404:
        record = _check(
            await client.post(
                "/v1/interregistry/registries",
                json={
                    "registry_id": registry_id,
                    "party": registry_id[:3],
                    "name": name or f"Reference national registry {registry_id} (simulator)",
                    "environment": "sandbox",
                    **{field: value for field, value in keys.items() if value is not None},
                    "signing": "required",
                    "response_timeout_s": 300,
                    "contacts": [{"name": "Simulator operator", "email": "simulator@example.org"}],
                },
                headers=headers,
            ),
            201,
        )
    else:
        record = _check(found, 200)
        changed = {field: value for field, value in keys.items() if record.get(field) != value}
        if changed:
            record = _check(
                await client.patch(
                    path, json=changed, headers={**headers, "If-Match": found.headers["ETag"]}
                ),
                200,
            )
    steps = {
        "onboarding": ["test", "activate"],
        "testing": ["activate"],
        # Suspension is the Secretariat's switch: a restart of the simulator must not undo it.
        "suspended": [],
        "active": [],
    }.get(record["status"])
    if steps is None:
        raise OnboardingFailed(f"registry {registry_id} is {record['status']}; use another registry id")
    for action in steps:
        _check(
            await client.post(f"{path}/{action}", json={"note": "simulator onboarding"}, headers=headers), 200
        )


async def load_or_onboard(
    ir_url: str,
    *,
    admin_id: str,
    admin_secret: str,
    registry_id: str,
    jwks: dict[str, Any],
    stored: dict[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    jwks_url: str | None = None,
) -> dict[str, str]:
    """`{"client_id", "client_secret"}` of the simulator's `registry` client, onboarding the record first;
    `stored` credentials are kept when they still get a token (the caller persists the result)."""
    async with httpx.AsyncClient(base_url=ir_url, transport=transport, timeout=10) as client:
        await onboard_registry(
            client,
            admin_id=admin_id,
            admin_secret=admin_secret,
            registry_id=registry_id,
            jwks=jwks,
            jwks_url=jwks_url,
        )
        token = await _token(client, admin_id, admin_secret)
        admin = {"Authorization": f"Bearer {token}"}
        if stored and await _token(client, stored["client_id"], stored["client_secret"]) is not None:
            # Listed on the record (§2.2; idempotent), or the IR refuses its messages 1004.
            listing = f"/v1/interregistry/registries/{registry_id}/clients/{stored['client_id']}"
            _check(await client.put(listing, headers=admin), 200)
            return stored
        made = _check(
            await client.post(
                "/v1/clients",
                json={
                    "name": f"{registry_id} simulator",
                    "party": registry_id[:3],
                    "roles": ["registry"],
                    "registry_id": registry_id,
                },
                headers=admin,
            ),
            201,
        )
        listing = f"/v1/interregistry/registries/{registry_id}/clients/{made['client_id']}"
        _check(await client.put(listing, headers=admin), 200)
    return {"client_id": made["client_id"], "client_secret": made["client_secret"]}
