"""A revoked API client is stopped everywhere at once: its access tokens on every service, its
unused initial access tokens; and the operator can always give a tenant a new admin client."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import msgspec

from shared import bus
from shared.bus import REVOCATION_MARGIN_SECONDS
from shared.bus_access import SETUP_USER
from shared.projections import REVOKED_CLIENTS_BUCKET, RevokedClient, kv_stream
from shared.revocations import RevokedClients
from tests.stack import Stack
from tests.test_clients import initial_access_token, register


async def second_client(stack: Stack, tenant: dict) -> tuple[dict, str]:
    """A client registered by the tenant's first one, and an access token of it."""
    _, client, _ = await register(stack, await initial_access_token(stack, tenant), {"client_name": "BI"})
    status, issued, _ = await stack.client_credentials(client["client_id"], client["client_secret"])
    assert status == 200, issued
    return client, issued["access_token"]


# An admin endpoint of each service with one (the gateway has none).
ENDPOINTS = {
    "registry": "/v1/venues",
    "provisioning": "/v1/devices",
    "heartbeat": "/v1/fleet/status",
}


async def test_a_revoked_clients_tokens_are_refused_by_every_service_within_2_seconds(stack):
    tenant = await stack.tenant()
    client, token = await second_client(stack, tenant)
    for service, path in ENDPOINTS.items():
        status, body, _ = await stack.call("GET", path, token=token)
        assert status == 200, (service, body)

    status, _, _ = await stack.call(
        "POST", f"/v1/clients/{client['client_id']}/revoke", token=tenant["token"]
    )
    assert status == 200
    revoked_at = time.monotonic()
    for service, path in ENDPOINTS.items():

        async def refused(path: str = path) -> dict | None:
            status, body, _ = await stack.call("GET", path, token=token)
            return body if status == 401 else None

        body = await stack.eventually(refused, timeout=2 - (time.monotonic() - revoked_at))
        assert (body["error"], body["message"]) == ("unauthorized", "this client was revoked"), service
    # What it could do with it before: none of it now.
    status, body, _ = await stack.call(
        "POST", "/v1/clients/initial-access-tokens", token=token, json={"ttlSeconds": 600}
    )
    assert status == 401, body
    status, body, _ = await stack.call(
        "POST", f"/v1/clients/{tenant['client']['clientId']}/revoke", token=token
    )
    assert status == 401, body
    # The tenant's other client is untouched.
    status, body, _ = await stack.call("GET", "/v1/venues", token=tenant["token"])
    assert status == 200, body


async def test_a_service_started_after_the_revocation_refuses_the_token_too(stack):
    tenant = await stack.tenant()
    client, token = await second_client(stack, tenant)
    status, _, _ = await stack.call(
        "POST", f"/v1/clients/{client['client_id']}/revoke", token=tenant["token"]
    )
    assert status == 200

    async def refused() -> bool:
        status, _, _ = await stack.call("GET", "/v1/fleet/status", token=token)
        return status == 401

    await stack.eventually(refused, timeout=2)
    await stack.stop_service("heartbeat")
    await stack.start_service("heartbeat")
    await stack.wait_ready("heartbeat")
    status, body, _ = await stack.call("GET", "/v1/fleet/status", token=token)
    assert (status, body["message"]) == (401, "this client was revoked"), body


async def test_its_unused_initial_access_tokens_die_with_it(stack):
    tenant = await stack.tenant()
    client, token = await second_client(stack, tenant)
    by_it = await initial_access_token(stack, {"token": token})
    by_the_first = await initial_access_token(stack, tenant)
    status, _, _ = await stack.call(
        "POST", f"/v1/clients/{client['client_id']}/revoke", token=tenant["token"]
    )
    assert status == 200
    status, body, _ = await register(stack, by_it, {})
    assert status == 401 and body["error"] == "invalid_token", body
    # Another client's token lives on.
    status, body, _ = await register(stack, by_the_first, {})
    assert status == 201, body


def entry(until: datetime) -> bytes:
    return msgspec.json.encode(
        RevokedClient(tenant_id=uuid.uuid4(), revoked_at=until - timedelta(hours=1), until=until)
    )


def test_the_set_holds_only_revocations_a_live_token_could_still_need():
    revoked = RevokedClients()
    now = datetime.now(UTC)
    # Two seconds: the checks right after must run before they pass, even on a slow machine.
    revoked.apply("cli_old", entry(now + timedelta(seconds=2)))
    revoked.apply("cli_looked_up", entry(now + timedelta(seconds=2)))
    revoked.apply("cli_live", entry(now + timedelta(hours=1)))
    assert all(revoked.revoked(c) for c in ("cli_old", "cli_looked_up", "cli_live"))
    assert not revoked.revoked("cli_other")
    time.sleep(2.1)
    assert not revoked.revoked("cli_looked_up")  # every token it got has expired by now
    assert len(revoked) == 2
    revoked.apply("cli_past", entry(now - timedelta(seconds=1)))  # a late copy of an old revocation
    revoked.apply("cli_new", entry(now + timedelta(hours=1)))
    # Each new revocation drops those past, looked up or not.
    assert len(revoked) == 2 and revoked.revoked("cli_new") and revoked.revoked("cli_live")
    revoked.apply("cli_live", None)  # deleted from the bucket
    assert not revoked.revoked("cli_live") and len(revoked) == 1


async def test_the_bucket_forgets_a_revocation_once_no_token_could_need_it(stack):
    nc = await bus.connect(stack.settings, SETUP_USER)
    try:
        info = await nc.jetstream().stream_info(kv_stream(REVOKED_CLIENTS_BUCKET))
    finally:
        await nc.close()
    assert info.config.max_age == stack.settings.token_ttl_seconds + REVOCATION_MARGIN_SECONDS


async def test_an_open_heartbeat_stream_of_a_revoked_client_ends_within_2_seconds(stack: Stack) -> None:
    """A stream is one long request: the token that opened it must not outlive the revocation."""
    tenant = await stack.tenant()
    client, token = await second_client(stack, tenant)
    response = await stack.http.get("/v1/heartbeats/stream", headers={"Authorization": f"Bearer {token}"})
    try:
        assert response.status == 200, await response.text()
        await response.content.readuntil(b"\n\n")  # "retry: ...": the stream is open
        status, _, _ = await stack.call(
            "POST", f"/v1/clients/{client['client_id']}/revoke", token=tenant["token"]
        )
        assert status == 200
        revoked_at = time.monotonic()
        async with asyncio.timeout(2.5):
            rest = await response.content.read()  # to the end: the service closed the stream
        assert time.monotonic() - revoked_at < 2.5 and b"keep-alive" not in rest
    finally:
        response.close()
