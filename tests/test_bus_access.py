"""The bus lets in only the services' own users, each with its own rights (shared/bus_access.py).

The rest of the suite proves the rights are enough: every service runs as its own user in every test.
These prove they are no more: what an intruder with the internet-facing gateway's password could do.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Callable

import msgspec
import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.js import api

from devstack.services import ROOT
from shared import bus
from shared.bus import BUCKETS, OBJECT_STORES, STREAMS
from shared.bus_access import ACCESS, SETUP_USER, inbox_prefix
from shared.projections import (
    DEVICE_FILES_BUCKET,
    DEVICE_KEYS_BUCKET,
    SCREEN_CONTENT_BUCKET,
    DeviceKeyEntry,
    device_key_digest,
    device_key_name,
    kv_stream,
    kv_subject,
)


class Connected:
    """A connection as one user, and the errors the server sent it (permission violations come
    back asynchronously, through the error callback)."""

    def __init__(self) -> None:
        self.nc: NATS
        self.errors: list[str] = []
        self._more = asyncio.Event()

    async def error(self, exc: Exception) -> None:
        self.errors.append(str(exc).lower())
        self._more.set()

    async def violation(self, operation: str, subject: str) -> None:
        """Wait (briefly) for the server's "permissions violation" of ``operation`` on ``subject``."""
        expected = f'permissions violation for {operation} to "{subject.lower()}"'
        async with asyncio.timeout(3):
            while not any(expected in error for error in self.errors):
                self._more.clear()
                await self._more.wait()


@pytest_asyncio.fixture
async def connect_as(stack) -> AsyncIterator[Callable]:
    opened: list[NATS] = []

    async def connect(user: str, password: str | None = None) -> Connected:
        connected = Connected()
        connected.nc = await nats.connect(
            list(stack.settings.nats_url),
            user=user,
            password=stack.settings.nats_password if password is None else password,
            inbox_prefix=inbox_prefix(user),
            error_cb=connected.error,
            allow_reconnect=False,
            connect_timeout=2,
        )
        opened.append(connected.nc)
        return connected

    yield connect
    for nc in opened:
        await nc.close()


@pytest.mark.parametrize("credentials", [{}, {"user": "device-gateway", "password": "guessed"}])
async def test_a_client_without_a_user_and_its_password_is_refused(stack, credentials):
    errors: list[str] = []

    async def error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(
            list(stack.settings.nats_url),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
            error_cb=error,
            **credentials,
        )
    assert any("authorization violation" in error for error in errors), errors


async def test_the_gateways_user_cannot_forge_a_device_key(stack, connect_as):
    """The attack the bus once allowed: an entry written into ``device-keys`` by whoever reaches the
    bus, and the forged key then reading a tenant's playlist. With the gateway's own password."""
    tenant = await stack.tenant()
    screen, registered = await stack.paired_device(tenant["token"])
    forged_key = "dak_" + secrets.token_urlsafe(32)
    entry = DeviceKeyEntry(
        device_id=uuid.uuid4(),
        screen_id=uuid.UUID(screen["id"]),
        tenant_id=uuid.UUID(tenant["id"]),
        status="active",
    )
    subject = kv_subject(DEVICE_KEYS_BUCKET, device_key_name(device_key_digest(forged_key)))
    gateway = await connect_as("device-gateway")
    with pytest.raises((nats.errors.Error, TimeoutError)):
        await gateway.nc.jetstream().publish(subject, msgspec.json.encode(entry), timeout=1)
    await gateway.violation("publish", subject)

    admin = await bus.connect(stack.settings, SETUP_USER)
    try:
        kv = await admin.jetstream().key_value(DEVICE_KEYS_BUCKET)
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get(device_key_name(device_key_digest(forged_key)))
    finally:
        await admin.close()
    status, body, _ = await stack.call("GET", "/v1/device/playlist", token=forged_key)
    assert status == 401, body
    status, _, _ = await stack.call("GET", "/v1/device/playlist", token=registered["apiKey"])
    assert status == 200  # the gateway's own reads still work


async def test_the_gateways_user_cannot_read_events_or_change_the_topology(stack, connect_as):
    gateway = await connect_as("device-gateway")
    js = gateway.nc.jetstream(timeout=1)
    attempts = {
        # Another service's replies, and the domain events it has no business with.
        "subscription": (f"{inbox_prefix('registry')}.>", "registry.>"),
        "publish": (
            "$JS.API.CONSUMER.CREATE.EVENTS",
            f"$JS.API.STREAM.DELETE.{kv_stream(DEVICE_KEYS_BUCKET)}",
            f"$JS.API.STREAM.PURGE.{kv_stream(DEVICE_KEYS_BUCKET)}",
            "$JS.API.STREAM.CREATE.ANYTHING",
        ),
    }
    # Its heartbeats share a stream with the heartbeat service's presence changes, not their subject.
    await gateway.nc.publish("heartbeat.presence.changed", b"{}")
    await gateway.violation("publish", "heartbeat.presence.changed")
    for subject in attempts["subscription"]:
        await gateway.nc.subscribe(subject)
        await gateway.violation("subscription", subject)
    with pytest.raises((nats.errors.Error, TimeoutError)):
        await js.add_consumer("EVENTS", api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL))
    with pytest.raises((nats.errors.Error, TimeoutError)):
        await js.delete_stream(kv_stream(DEVICE_KEYS_BUCKET))
    with pytest.raises((nats.errors.Error, TimeoutError)):
        await js.purge_stream(kv_stream(DEVICE_KEYS_BUCKET))
    with pytest.raises((nats.errors.Error, TimeoutError)):
        await js.add_stream(name="ANYTHING", subjects=["anything.>"])
    for subject in attempts["publish"]:
        await gateway.violation("publish", subject)
    info = await js.stream_info(kv_stream(DEVICE_KEYS_BUCKET))  # looking is allowed
    assert info.config.name == kv_stream(DEVICE_KEYS_BUCKET)


async def test_the_gateway_cannot_make_the_server_store_a_message_as_a_device_key(stack, connect_as):
    """The server answers a pull or a direct get on the reply subject the request names, and a
    stream capturing that subject stores the answer: a pull from the keys' stream replied into
    ``$KV.screen-content.`` would stash a key entry (to bring it back after its revoke), a direct
    get of a tenant's file replied into ``$KV.device-keys.<name>`` would store the file as a key.
    The gateway may do neither; the streams stay as they were."""
    tenant = await stack.tenant()
    screen, _ = await stack.paired_device(tenant["token"])
    # A tenant's file that reads as a key entry: what a direct get would have stored as a key.
    entry = {
        "deviceId": str(uuid.uuid4()),
        "screenId": screen["id"],
        "tenantId": tenant["id"],
        "status": "active",
    }
    status, body, _ = await stack.call(
        "PUT",
        "/v1/content/entry.json",
        token=tenant["token"],
        data=msgspec.json.encode(entry),
        headers={"Content-Type": "application/json"},
    )
    assert status in (200, 201), body
    admin = await bus.connect(stack.settings, SETUP_USER)
    try:
        js = admin.jetstream()
        streams = [*STREAMS, *(kv_stream(bucket) for bucket in BUCKETS), *(f"OBJ_{s}" for s in OBJECT_STORES)]
        before = {name: (await js.stream_info(name)).state.messages for name in streams}
        # A durable to pull from, made by the administrator (the gateway may not make one).
        await js.add_consumer(kv_stream(DEVICE_KEYS_BUCKET), api.ConsumerConfig(durable_name="stash"))
        gateway = await connect_as("device-gateway")
        forged = kv_subject(DEVICE_KEYS_BUCKET, device_key_name(device_key_digest("dak_forged")))
        attempts = [
            (
                f"$JS.API.CONSUMER.MSG.NEXT.{kv_stream(DEVICE_KEYS_BUCKET)}.stash",
                b'{"batch": 5}',
                "$KV.screen-content.x",
            ),
            (f"$JS.API.DIRECT.GET.OBJ_{DEVICE_FILES_BUCKET}", b'{"seq": 1}', forged),
            (f"$JS.API.DIRECT.GET.{kv_stream(SCREEN_CONTENT_BUCKET)}", b'{"seq": 1}', forged),
            (f"$JS.API.STREAM.MSG.GET.{kv_stream(DEVICE_KEYS_BUCKET)}", b'{"seq": 1}', forged),
            (f"$JS.API.CONSUMER.DURABLE.CREATE.{kv_stream(DEVICE_KEYS_BUCKET)}.mine", b"{}", forged),
        ]
        for subject, payload, reply in attempts:
            await gateway.nc.publish(subject, payload, reply=reply)
            await gateway.violation("publish", subject)
        await gateway.nc.flush()
        after = {name: (await js.stream_info(name)).state.messages for name in streams}
        assert after == before
        status, _, _ = await stack.call("GET", "/v1/device/playlist", token="dak_forged")
        assert status == 401
    finally:
        await admin.close()


@pytest.mark.parametrize("user", sorted(ACCESS))
async def test_no_service_may_publish_another_services_events(stack, connect_as, user):
    """Each service's events carry its name first (``registry.screen.created``); the others'
    are out of its reach, so an event on a subject is the named service's word."""
    connected = await connect_as(user)
    others = [f"{other}.something.happened" for other in ("registry", "provisioning") if other != user]
    for subject in others:
        await connected.nc.publish(subject, b"{}")
        await connected.violation("publish", subject)


def test_the_docs_table_of_users_is_the_table_the_servers_get():
    """docs/operations.md says what each user may do; out of date, it would mislead an auditor."""
    text = (ROOT / "docs" / "operations.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in text.splitlines() if line.startswith("| `")}
    for user, access in ACCESS.items():
        row = rows.get(user, "")
        consumed = [f"{stream}/{durable}" for stream, durable in access.consumes]
        named = (*access.writes, *access.requests, *access.denied, *access.follows, *consumed, *access.gets)
        for subject in (*named, inbox_prefix(user)):
            assert f"`{subject}" in row, (user, subject)
