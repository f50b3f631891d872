"""What provisioning forgets after a retention, and what a caller hears before and after.

A revoked key answers 401 ``device_revoked`` for REVOKED_KEY_RETENTION_HOURS; then its row goes,
a purge of its ``device-keys`` entry follows the revoke through the outbox, every gateway drops
it from memory, and the purge marker itself ages out of the bucket: the key is unknown (401
``unauthorized``). Expired codes and provisioning tokens answer 410 for
PRUNE_EXPIRED_AFTER_SECONDS, then 404. Time is moved by ageing the rows' timestamps in SQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import nats
import nats.js.errors
import pytest
import pytest_asyncio
from nats.js.api import DiscardPolicy, StreamConfig

from services.device_gateway.devices import PROJECTIONS
from services.provisioning import binding
from shared import bus, outbox
from shared.bus_access import SETUP_USER
from shared.db import create_pool
from shared.projections import DEVICE_KEYS_BUCKET, device_key_digest, device_key_name, kv_stream
from shared.settings import Settings
from tests.binding import assert_error, gateway, pair, until_gateway
from tests.stack import Stack
from tests.test_convergence import revoke
from tests.test_device_flow import poll, start
from tests.test_provisioning_tokens import new_token, provision

pytestmark = pytest.mark.timeout(120)

DAY = 24 * 3600
STREAM = kv_stream(DEVICE_KEYS_BUCKET)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The service's own pruning every second, so a test sees it act on what it aged.
    return msgspec.structs.replace(settings, register_failure_window_seconds=1)


@pytest_asyncio.fixture
async def provisioning_db(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.settings.database_url, "provisioning", min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest_asyncio.fixture
async def js(stack: Stack) -> AsyncIterator[nats.js.JetStreamContext]:
    nc = await bus.connect(stack.settings, SETUP_USER)
    yield nc.jetstream()
    await nc.close()


def subject_of(api_key: str) -> str:
    return f"$KV.{DEVICE_KEYS_BUCKET}.{device_key_name(device_key_digest(api_key))}"


async def messages_of(js: nats.js.JetStreamContext, subject: str) -> int:
    """How many messages the bucket's stream holds for ``subject`` (values and markers)."""
    info = await js.stream_info(STREAM, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def operation_of(js: nats.js.JetStreamContext, subject: str) -> str | None:
    """The KV operation of the subject's last message (None: a value)."""
    message = await js.get_last_msg(STREAM, subject)
    return (message.headers or {}).get("KV-Operation")


async def test_a_revoked_key_is_forgotten_after_its_retention_everywhere(
    stack, provisioning_db, js, monkeypatch
):
    # A marker that ages out in a second rather than a day: the bucket is seen to empty.
    monkeypatch.setattr(outbox, "PURGE_MARKER_SECONDS", 1)
    tenant = await stack.tenant()
    _, revoked = await pair(stack, tenant["token"])
    _, live = await pair(stack, tenant["token"])
    _, recent = await pair(stack, tenant["token"])
    await revoke(stack, tenant["token"], revoked["deviceId"])
    await revoke(stack, tenant["token"], recent["deviceId"])
    await until_gateway(stack, revoked["apiKey"], 401, "device_revoked")
    await until_gateway(stack, recent["apiKey"], 401, "device_revoked")
    projections = stack.runners["device-gateway"].app[PROJECTIONS]
    cached = len(projections.keys)
    assert cached == 3, cached
    gone = subject_of(revoked["apiKey"])

    async with provisioning_db.acquire() as conn:
        await conn.execute(
            "UPDATE device_keys SET revoked_at = now() - interval '31 days' WHERE device_id = $1",
            revoked["deviceId"],
        )

    async def forgotten() -> bool:
        return device_key_digest(revoked["apiKey"]) not in projections.keys

    # The service's pruning (every second here) forgets it: the gateway's memory first.
    await stack.eventually(forgotten, timeout=10)
    assert len(projections.keys) == cached - 1
    assert_error(*await gateway(stack, revoked["apiKey"]), 401, "unauthorized")
    async with provisioning_db.acquire() as conn:
        rows = await conn.fetchval(
            "SELECT count(*) FROM device_keys WHERE device_id = $1", revoked["deviceId"]
        )
        assert rows == 0
        # The device, its audit trail and the other keys stay.
        device = await conn.fetchrow("SELECT status FROM devices WHERE id = $1", revoked["deviceId"])
        assert device["status"] == "suspended"
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM binding_audit WHERE device_id = $1", revoked["deviceId"]
            )
            == 2
        )
    # The live key and the key revoked within its retention answer as before.
    assert (await gateway(stack, live["apiKey"]))[0] == 200
    assert_error(*await gateway(stack, recent["apiKey"]), 401, "device_revoked")
    for key in (live["apiKey"], recent["apiKey"]):
        assert await operation_of(js, subject_of(key)) is None
    # Provisioning's own answer to the key agrees with the gateway's.
    status, body, _ = await stack.call("POST", "/v1/device/logout", token=revoked["apiKey"])
    assert_error(status, body, 401, "unauthorized")

    # In the bucket, the purge marker replaced the values, then aged out: nothing of the key is left.
    async def emptied() -> bool:
        return await messages_of(js, gone) == 0

    await stack.eventually(emptied, timeout=10)
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.get_last_msg(STREAM, gone)
    # A gateway that starts now loads the live fleet's keys only.
    await stack.stop_service("device-gateway")
    await stack.start_service("device-gateway")
    await stack.wait_ready("device-gateway")
    restarted = stack.runners["device-gateway"].app[PROJECTIONS]
    assert set(restarted.keys) == {device_key_digest(live["apiKey"]), device_key_digest(recent["apiKey"])}


async def test_replicas_forget_each_key_once(stack, provisioning_db, js):
    """Three rounds at once (three replicas) over 40 revoked keys in batches of 7: every key goes,
    once, and only the keys past the retention."""
    tenant = await stack.tenant()
    _, registered = await pair(stack, tenant["token"])
    await revoke(stack, tenant["token"], registered["deviceId"])
    async with provisioning_db.acquire() as conn:
        await conn.execute(
            "INSERT INTO device_keys (key_hash, device_id, revoked_at)"
            " SELECT sha256(('k' || i)::bytea), $1, now() - interval '2 hours' FROM generate_series(1, 40) i",
            registered["deviceId"],
        )

    async def replica() -> int:
        forgotten = 0
        async with provisioning_db.acquire() as conn:
            while count := await binding.forget_revoked_keys(conn, 3600, 7):
                forgotten += count
        return forgotten

    counts = await asyncio.gather(replica(), replica(), replica())
    assert sum(counts) == 40, counts
    async with provisioning_db.acquire() as conn:
        # The key revoked a moment ago is within its retention: it stays.
        left = await conn.fetch(
            "SELECT key_hash FROM device_keys WHERE device_id = $1", registered["deviceId"]
        )
        assert [row["key_hash"] for row in left] == [device_key_digest(registered["apiKey"])]
        names = [
            device_key_name(row["digest"])
            for row in await conn.fetch(
                "SELECT sha256(('k' || i)::bytea) AS digest FROM generate_series(1, 40) i"
            )
        ]

    async def all_purged() -> bool:
        info = await js.stream_info(STREAM, subjects_filter=f"$KV.{DEVICE_KEYS_BUCKET}.>")
        return (
            sum((info.state.subjects or {}).get(f"$KV.{DEVICE_KEYS_BUCKET}.{name}", 0) for name in names)
            == 40
        )

    await stack.eventually(all_purged, timeout=10)
    for name in names:
        assert await operation_of(js, f"$KV.{DEVICE_KEYS_BUCKET}.{name}") == "PURGE"
    assert_error(*await gateway(stack, registered["apiKey"]), 401, "device_revoked")


async def test_expired_codes_tokens_and_authorizations_answer_expired_then_unknown_once_pruned(
    stack, provisioning_db
):
    tenant = await stack.tenant()
    token = tenant["token"]
    expired_screen, pending_screen, token_screen = (
        await stack.screen(token, "A"),
        await stack.screen(token, "B"),
        await stack.screen(token, "C"),
    )
    expired = (await stack.code(token, expired_screen["id"]))["code"]
    pending = (await stack.code(token, pending_screen["id"]))["code"]
    status, created = await new_token(stack, token, token_screen["id"])
    assert status == 201, created
    status, started = await start(stack)
    assert status == 200, started
    async with provisioning_db.acquire() as conn:
        await conn.execute(
            "UPDATE provisioning_codes SET expires_at = now() - interval '1 hour' WHERE code = $1", expired
        )
        await conn.execute("UPDATE provisioning_tokens SET expires_at = now() - interval '1 hour'")
        await conn.execute("UPDATE device_authorizations SET expires_at = now() - interval '1 hour'")

    async def code_status(code: str) -> tuple[int, Any]:
        status, body, _ = await stack.call(
            "GET", f"/v1/devices/provisioning-codes/{code}/status", token=token
        )
        return status, body

    # Within PRUNE_EXPIRED_AFTER_SECONDS (a day) they are kept and say they expired.
    status, body = await code_status(expired)
    assert (status, body["status"]) == (200, "expired"), body
    status, body = await stack.register(expired)
    assert_error(status, body, 410, "code_expired")
    assert_error(*await provision(stack, created["token"]), 410, "code_expired")
    assert (await poll(stack, started["device_code"]))["error"] == "expired_token"
    user_code = f"/v1/devices/device-authorizations/{started['user_code']}"
    status, body, _ = await stack.call("GET", user_code, token=token)
    assert (status, body["status"]) == (200, "expired"), body

    async with provisioning_db.acquire() as conn:
        await conn.execute(
            "UPDATE provisioning_codes SET expires_at = now() - interval '2 days' WHERE code = $1", expired
        )
        await conn.execute("UPDATE provisioning_tokens SET expires_at = now() - interval '2 days'")
        await conn.execute("UPDATE device_authorizations SET expires_at = now() - interval '2 days'")

    async def pruned() -> bool:
        async with provisioning_db.acquire() as conn:
            codes = await conn.fetchval("SELECT count(*) FROM provisioning_codes WHERE code = $1", expired)
            tokens = await conn.fetchval("SELECT count(*) FROM provisioning_tokens")
            authorizations = await conn.fetchval("SELECT count(*) FROM device_authorizations")
        return codes == 0 and tokens == 0 and authorizations == 0

    await stack.eventually(pruned, timeout=10)
    assert_error(*await code_status(expired), 404, "not_found")
    status, body = await stack.register(expired)
    assert_error(status, body, 404, "not_found")
    assert_error(*await provision(stack, created["token"]), 404, "not_found")
    assert (await poll(stack, started["device_code"]))["error"] == "invalid_grant"
    status, body, _ = await stack.call("GET", user_code, token=token)
    assert_error(status, body, 404, "not_found")
    # The pending code is untouched, and still binds.
    status, body = await code_status(pending)
    assert (status, body["status"]) == (200, "pending"), body
    status, registered = await stack.register(pending)
    assert status == 201, registered


async def test_buckets_made_before_message_ttls_are_given_them(nats_server):
    """A bucket nats-py made before per-message TTLs refuses a purge marker that ages out: the
    relay would retry it forever. The setup step allows them on such a bucket."""
    nc = await nats.connect(nats_server.url, user=SETUP_USER, password=nats_server.password)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=STREAM,
                subjects=[f"$KV.{DEVICE_KEYS_BUCKET}.>"],
                max_msgs_per_subject=1,
                allow_rollup_hdrs=True,
                deny_delete=True,
                allow_direct=True,
                discard=DiscardPolicy.NEW,
            )
        )
        assert not (await js.stream_info(STREAM)).config.allow_msg_ttl
        await bus.ensure_topology(js, 1, token_ttl_seconds=3600, heartbeat_stream_hours=24)
        assert (await js.stream_info(STREAM)).config.allow_msg_ttl
        await js.publish(
            f"$KV.{DEVICE_KEYS_BUCKET}.gone",
            b"",
            headers={"KV-Operation": "PURGE", "Nats-Rollup": "sub", "Nats-TTL": "1"},
        )
    finally:
        await nc.close()
