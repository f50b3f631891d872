"""Webhook delivery end to end: events on the bus reach a real HTTP receiver on loopback, signed
(checked with the standardwebhooks library), retried while it is down, never held up by another
endpoint, with NATS killed and registry SIGKILLed on the way; and the retry schedule, the
payloads and the signature on their own."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from devstack.infra import NatsServer
from services.registry.queries import webhook_deliveries
from services.registry.queries.webhook_deliveries import DueDelivery
from services.registry.webhook_delivery import USER_AGENT, retry_delay
from services.registry.webhook_events import WEBHOOK_EVENT_TYPES, webhook_body, webhook_type
from services.registry.webhook_signing import signature_header
from shared.events import (
    ActivationRepeated,
    CommandExpired,
    CommandFailed,
    CommandSucceeded,
    DeviceBound,
    DeviceRevoked,
    Event,
    ScreenOfflineAlert,
    ScreenOnlineAlert,
    VenueOfflineAlert,
    VenueOnlineAlert,
    WebhookDisabled,
)
from shared.settings import Settings
from tests.binding import pair
from tests.stack import Stack, spawn, until_ready
from tests.webhooks import (
    Receiver,
    add_endpoint,
    command_failures,
    deliveries,
    endpoint_row,
    new_secret,
    publish,
    sql,
)

pytestmark = pytest.mark.timeout(120)

# Retries within a fraction of a second, so a test's outage lasts seconds.
FAST = {"webhook_retry_first_seconds": 0.2, "webhook_timeout_seconds": 2.0}
HOUR = 3600


@contextlib.asynccontextmanager
async def webhook_stack(
    settings: Settings, sockets: dict[str, socket.socket], **changes: Any
) -> AsyncIterator[Stack]:
    async with Stack(msgspec.structs.replace(settings, **{**FAST, **changes}), sockets) as stack:
        yield stack


@contextlib.asynccontextmanager
async def receiving(*receivers: Receiver) -> AsyncIterator[None]:
    for receiver in receivers:
        await receiver.start()
    try:
        yield
    finally:
        for receiver in receivers:
            await receiver.stop()


# ---- on their own: the schedule, the payloads, the signature ------------------------------------


# The settings' defaults: what a deployment retries with unless told otherwise.
DEFAULTS = {field.name: field.default for field in msgspec.structs.fields(Settings)}


def attempt_times(uniform: Any) -> list[float]:
    """When a delivery that always fails is attempted (seconds after its event), as the dispatcher
    schedules it: each retry after ``retry_delay``, none past the retry window, the last at its end."""
    window = DEFAULTS["webhook_retry_for_hours"] * HOUR
    times = [0.0]
    while times[-1] < window:
        delay = retry_delay(
            len(times),
            first=DEFAULTS["webhook_retry_first_seconds"],
            cap=DEFAULTS["webhook_retry_max_interval_seconds"],
            uniform=uniform,
        )
        times.append(min(times[-1] + delay, window))
    return times


@pytest.mark.parametrize(
    "uniform", [lambda: 0.0, lambda: 1.0, random.Random(7).random], ids=["low", "high", "random"]
)
def test_the_default_retry_schedule_retries_quickly_first_then_for_more_than_a_day(uniform):
    times = attempt_times(uniform)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert 3.999 <= gaps[0] <= 6.001  # the first retry within seconds
    assert times[-1] >= 24 * HOUR  # retried for at least a day...
    assert times[-1] == DEFAULTS["webhook_retry_for_hours"] * HOUR  # ...until its window ends
    assert max(gaps) <= DEFAULTS["webhook_retry_max_interval_seconds"] + 0.001
    # About six times longer each time until the cap (±20% each way).
    for earlier, later in itertools.pairwise(gaps[:4]):
        assert 6 * 0.8 / 1.2 - 0.001 <= later / earlier <= 6 * 1.2 / 0.8 + 0.001, gaps
    assert len(times) <= 12, times  # a dead endpoint costs a dozen requests a day, not thousands


def test_retry_waits_are_spread_so_failures_together_do_not_come_back_together():
    waits = {round(retry_delay(2, first=5, cap=5 * HOUR), 3) for _ in range(50)}
    assert len(waits) > 40
    assert min(waits) >= 30 * 0.8 and max(waits) <= 30 * 1.2


async def test_a_retry_is_never_scheduled_past_its_window_and_fails_at_its_end(database):
    conn = await asyncpg.connect(database, server_settings={"search_path": "registry"})
    try:
        tenant_id, endpoint_id = uuid.uuid4(), uuid.uuid4()
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, 'T')", tenant_id)
        await conn.execute(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, events, secret)"
            " VALUES ($1, $2, 'https://example.com/', '{command.failed}', $3)",
            endpoint_id,
            tenant_id,
            new_secret(),
        )

        async def failed_once(age_hours: float, retry_in: float) -> tuple[str, float | None]:
            delivery_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO webhook_deliveries"
                " (id, endpoint_id, tenant_id, message_id, event_type, payload, next_attempt_at, created_at)"
                " VALUES ($1, $2, $3, $4, 'command.failed', '{}', now(), now() - make_interval(secs => $5))",
                delivery_id,
                endpoint_id,
                tenant_id,
                str(delivery_id),
                age_hours * HOUR,
            )
            delivery = DueDelivery(
                id=delivery_id,
                endpoint_id=endpoint_id,
                tenant_id=tenant_id,
                message_id=str(delivery_id),
                payload="{}",
                attempts=0,
                url="https://example.com/",
                secrets=[],
            )
            state = await webhook_deliveries.record_failure(
                conn,
                delivery,
                status_code=503,
                error="x",
                retry_in_seconds=retry_in,
                retry_for_seconds=28 * HOUR,
            )
            left = await conn.fetchval(
                "SELECT extract(epoch FROM created_at + interval '28 hours' - next_attempt_at)::float8"
                " FROM webhook_deliveries WHERE id = $1",
                delivery_id,
            )
            assert state is not None
            return state, left

        state, left = await failed_once(1, 60)
        assert state == "pending" and left == pytest.approx(27 * HOUR - 60, abs=5)
        # A wait past the window's end is cut to it: the last attempt is at the end of the window.
        state, left = await failed_once(27.9, HOUR)
        assert state == "pending" and left == 0
        state, left = await failed_once(28.01, 60)
        assert (state, left) == ("failed", None)
    finally:
        await conn.close()


TENANT = uuid.uuid4()
SCREEN, DEVICE, VENUE, COMMAND = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
AT = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)


def sample_events() -> list[Event]:
    """One event of every kind a webhook carries."""
    command: dict[str, Any] = {
        "tenant_id": TENANT,
        "screen_id": SCREEN,
        "command_id": COMMAND,
        "command_type": "reboot",
    }
    return [
        DeviceBound(tenant_id=TENANT, device_id=DEVICE, screen_id=SCREEN, binding_seq=1, bound_at=AT),
        DeviceRevoked(
            tenant_id=TENANT,
            device_id=DEVICE,
            screen_id=SCREEN,
            binding_seq=2,
            reason="stolen",
            revoked_at=AT,
        ),
        DeviceRevoked(
            tenant_id=TENANT,
            device_id=DEVICE,
            screen_id=SCREEN,
            binding_seq=2,
            reason="device_logout",
            revoked_at=AT,
        ),
        ScreenOfflineAlert(
            tenant_id=TENANT,
            venue_id=VENUE,
            screen_id=SCREEN,
            screen_name="Lobby",
            last_seen_at=AT,
            offline_alert_after_minutes=15,
        ),
        ScreenOnlineAlert(
            tenant_id=TENANT, venue_id=VENUE, screen_id=SCREEN, screen_name="Lobby", last_seen_at=AT
        ),
        VenueOfflineAlert(
            tenant_id=TENANT,
            venue_id=VENUE,
            incident_id=uuid.uuid4(),
            venue_name="HQ",
            screen_ids=[SCREEN],
            screens_total=2,
        ),
        VenueOnlineAlert(tenant_id=TENANT, venue_id=VENUE, incident_id=uuid.uuid4(), venue_name="HQ"),
        ActivationRepeated(
            tenant_id=TENANT,
            serial="SN-1234",
            screen_id=SCREEN,
            device_id=DEVICE,
            client_address="203.0.113.7",
        ),
        CommandSucceeded(**command, message="done"),
        CommandFailed(**command, message="no disk"),
        CommandExpired(**command),
        WebhookDisabled(tenant_id=TENANT, webhook_id=uuid.uuid4(), reason="gone"),
    ]


SECRET_WORDS = re.compile(r"secret|password|token|key|hash", re.IGNORECASE)
SECRET_VALUES = re.compile(r"^(dak_|drs_|whsec_|op_|sk_)")


def assert_no_secrets(event_type: str, value: Any) -> None:
    if isinstance(value, dict):
        for name, inner in value.items():
            assert not SECRET_WORDS.search(name), (event_type, name)
            assert_no_secrets(event_type, inner)
    elif isinstance(value, list):
        for inner in value:
            assert_no_secrets(event_type, inner)
    elif isinstance(value, str):
        assert not SECRET_VALUES.match(value), (event_type, value)


def test_every_webhook_type_has_a_payload_without_keys_or_secrets():
    bodies = {}
    for event in sample_events():
        event_type = webhook_type(event)
        assert event_type is not None, event
        body = msgspec.json.decode(webhook_body(event, event_type))
        bodies[event_type] = body
        assert set(body) == {"type", "timestamp", "data"}
        assert body["type"] == event_type
        assert (
            body["timestamp"]
            == body["data"]["occurredAt"]
            == event.occurred_at.isoformat().replace("+00:00", "Z")
        )
        assert body["data"]["tenantId"] == str(TENANT)
        assert not {"v", "eventId", "type"} & set(body["data"]), body

        assert_no_secrets(event_type, body)
    assert sorted(bodies) == sorted(WEBHOOK_EVENT_TYPES)
    assert bodies["device.logout"]["data"]["reason"] == "device_logout"
    assert bodies["device.revoked"]["data"]["reason"] == "stolen"


def test_signatures_verify_with_the_standard_webhooks_library():
    current, previous = new_secret(), new_secret()
    body = '{"type":"command.failed","timestamp":"2025-03-14T09:26:53Z","data":{}}'
    timestamp = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header([current, previous], "msg_1", timestamp, body),
    }
    assert Webhook(current).verify(body, headers)["type"] == "command.failed"
    assert Webhook(previous).verify(body, headers)["type"] == "command.failed"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(current).verify(body.replace("failed", "succeeded"), headers)


# ---- end to end ---------------------------------------------------------------------------------


async def test_a_device_bound_and_revoked_reach_the_endpoint_signed_and_nobody_else(settings, sockets):
    receiver, other_tenants = Receiver(), Receiver()
    async with webhook_stack(settings, sockets) as stack, receiving(receiver, other_tenants):
        tenant, other = await stack.tenant(), await stack.tenant("Other")
        endpoint = await add_endpoint(
            stack.settings, tenant["id"], receiver.url, ["device.bound", "device.revoked", "device.logout"]
        )
        # Another tenant's endpoint, and one of the tenant's for other types: they get nothing.
        await add_endpoint(stack.settings, other["id"], other_tenants.url, ["device.bound", "device.revoked"])
        await add_endpoint(stack.settings, tenant["id"], other_tenants.url, ["command.failed"])
        screen, registered = await stack.paired_device(tenant["token"])
        status, body, _ = await stack.call(
            "POST",
            f"/v1/devices/{registered['deviceId']}/revoke",
            token=tenant["token"],
            json={"reason": "stolen"},
        )
        assert status == 200, body

        async def both() -> bool:
            return len(receiver.requests) >= 2

        await stack.eventually(both, timeout=10)
        # Sent concurrently (and fanned out in one batch when they come together): in either order.
        bodies = {body["type"]: body for body in (r.verified(endpoint.secret) for r in receiver.requests)}
        bound, revoked = bodies["device.bound"], bodies["device.revoked"]
        common = {"tenantId": tenant["id"], "deviceId": registered["deviceId"], "screenId": screen["id"]}
        assert bound == {
            "type": "device.bound",
            "timestamp": bound["data"]["occurredAt"],
            "data": {
                **common,
                "occurredAt": bound["timestamp"],
                "bindingSeq": bound["data"]["bindingSeq"],
                "boundAt": bound["data"]["boundAt"],
            },
        }
        assert revoked == {
            "type": "device.revoked",
            "timestamp": revoked["data"]["occurredAt"],
            "data": {
                **common,
                "occurredAt": revoked["timestamp"],
                "bindingSeq": bound["data"]["bindingSeq"] + 1,
                "reason": "stolen",
                "revokedAt": body["revokedAt"],
            },
        }
        for when in (bound["timestamp"], revoked["timestamp"], bound["data"]["boundAt"]):
            assert datetime.fromisoformat(when).tzinfo is not None
        for request in receiver.requests:
            assert request.headers["content-type"] == "application/json"
            assert request.headers["user-agent"] == USER_AGENT
            assert uuid.UUID(request.id)
            assert request.headers["webhook-signature"].startswith("v1,")
            assert " " not in request.headers["webhook-signature"]  # one secret, one signature
        assert len(receiver.distinct_ids()) == 2

        async def settled() -> bool:
            return {d["state"] for d in await deliveries(stack.settings, endpoint)} == {"delivered"}

        await stack.eventually(settled, timeout=2)
        log = await deliveries(stack.settings, endpoint)
        assert sorted((d["event_type"], d["state"], d["attempts"], d["last_status_code"]) for d in log) == [
            ("device.bound", "delivered", 1, 200),
            ("device.revoked", "delivered", 1, 200),
        ]
        assert (await endpoint_row(stack.settings, endpoint))["last_success_at"] is not None
        await asyncio.sleep(0.3)
        assert other_tenants.requests == []
        assert len(receiver.requests) == 2


async def test_a_receiver_down_for_a_while_gets_everything_once_up_in_the_order_of_their_retries(
    settings, sockets
):
    receiver = Receiver()  # its port is bound but not listening: connections are refused
    async with webhook_stack(
        settings, sockets, webhook_retry_first_seconds=0.1, webhook_concurrency_per_endpoint=1
    ) as stack:
        tenant = await stack.tenant()
        endpoint = await add_endpoint(stack.settings, tenant["id"], receiver.url, ["command.failed"])
        await publish(stack.settings, command_failures(tenant["id"], 8))

        async def waiting_for_a_later_retry() -> list[dict[str, Any]] | None:
            # Each has failed three times and waits several seconds for its fourth attempt.
            log = await deliveries(stack.settings, endpoint)
            if len(log) == 8 and all(d["attempts"] >= 3 and d["due_in"] > 1 for d in log):
                return log
            return None

        log = await stack.eventually(waiting_for_a_later_retry, timeout=10)
        assert {d["state"] for d in log} == {"pending"}
        assert all(
            d["last_status_code"] is None and d["last_error"].startswith("cannot connect") for d in log
        )
        retry_order = [d["message_id"] for d in sorted(log, key=lambda d: d["next_attempt_at"])]
        async with receiving(receiver):

            async def all_delivered() -> bool:
                return {d["state"] for d in await deliveries(stack.settings, endpoint)} == {"delivered"}

            await stack.eventually(all_delivered, timeout=10)
        assert receiver.ids() == retry_order  # each once, in the order their retries came due
        for request in receiver.requests:
            assert request.verified(endpoint.secret)["type"] == "command.failed"
        assert (await endpoint_row(stack.settings, endpoint))["failing_since"] is None


async def test_a_slow_endpoint_does_not_delay_a_fast_one(settings, sockets):
    slow, fast = Receiver(delay=5), Receiver()
    async with (
        webhook_stack(
            settings, sockets, webhook_timeout_seconds=10.0, webhook_concurrency_per_endpoint=2
        ) as stack,
        receiving(slow, fast),
    ):
        tenant = await stack.tenant()
        # The slow one registered first: its backlog is the oldest due.
        await add_endpoint(stack.settings, tenant["id"], slow.url, ["command.failed"])
        fast_endpoint = await add_endpoint(stack.settings, tenant["id"], fast.url, ["command.failed"])
        events = command_failures(tenant["id"], 20)
        started = asyncio.get_running_loop().time()
        await publish(stack.settings, events)

        async def fast_has_all() -> bool:
            return len(fast.distinct_ids()) == 20

        await stack.eventually(fast_has_all, timeout=4)
        assert asyncio.get_running_loop().time() - started < 4  # the slow one answers its first after 5 s
        assert fast.distinct_ids() == {str(event.event_id) for event in events}

        async def fast_settled() -> bool:  # a request's answer is recorded just after it
            return {d["state"] for d in await deliveries(stack.settings, fast_endpoint)} == {"delivered"}

        await stack.eventually(fast_settled, timeout=2)
        # The slow one holds its own share of requests, no more.
        assert slow.most_in_flight == 2
        assert len(slow.requests) == 2


async def test_a_410_turns_the_endpoint_off_and_the_tenant_hears_of_it(settings, sockets):
    gone, watcher = Receiver(status=410), Receiver()
    async with webhook_stack(settings, sockets) as stack, receiving(gone, watcher):
        tenant = await stack.tenant()
        endpoint = await add_endpoint(stack.settings, tenant["id"], gone.url, ["command.failed"])
        watching = await add_endpoint(stack.settings, tenant["id"], watcher.url, ["webhook.disabled"])
        metrics_before = await gone_total(stack)
        await publish(stack.settings, command_failures(tenant["id"], 3))

        async def told() -> bool:
            return len(watcher.requests) >= 1

        await stack.eventually(told, timeout=10)
        disabled = watcher.requests[0].verified(watching.secret)
        assert disabled == {
            "type": "webhook.disabled",
            "timestamp": disabled["timestamp"],
            "data": {
                "occurredAt": disabled["timestamp"],
                "tenantId": tenant["id"],
                "webhookId": endpoint.id,
                "reason": "gone",
            },
        }
        row = await endpoint_row(stack.settings, endpoint)
        assert (row["enabled"], row["disabled_reason"]) == (False, "gone")
        log = await deliveries(stack.settings, endpoint)
        assert {d["state"] for d in log} == {"failed"} and len(log) == 3
        assert 410 in {d["last_status_code"] for d in log}
        assert await gone_total(stack) > metrics_before
        await publish(stack.settings, command_failures(tenant["id"], 1))
        await asyncio.sleep(0.5)
        assert len(await deliveries(stack.settings, endpoint)) == 3  # an endpoint turned off gets no more
        assert len(watcher.requests) == 1


async def gone_total(stack: Stack) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.url("registry") + "/metrics") as response,
    ):
        text = await response.text()
    found = re.search(r'^webhook_deliveries_total\{outcome="gone"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_the_previous_secret_signs_alongside_while_its_grace_lasts(settings, sockets):
    receiver = Receiver()
    async with webhook_stack(settings, sockets) as stack, receiving(receiver):
        tenant = await stack.tenant()
        previous = new_secret()
        endpoint = await add_endpoint(
            stack.settings,
            tenant["id"],
            receiver.url,
            ["command.failed"],
            previous_secret=previous,
            previous_for_seconds=HOUR,
        )
        await publish(stack.settings, command_failures(tenant["id"], 1))

        async def received(count: int) -> Any:
            async def check() -> bool:
                return len(receiver.requests) >= count

            return check

        await stack.eventually(await received(1), timeout=10)
        in_grace = receiver.requests[0]
        assert len(in_grace.headers["webhook-signature"].split(" ")) == 2
        assert in_grace.verified(endpoint.secret) == in_grace.verified(previous)

        await sql(
            stack.settings,
            "UPDATE webhook_endpoints SET previous_secret_until = now() - interval '1 second' WHERE id = $1",
            uuid.UUID(endpoint.id),
        )
        await publish(stack.settings, command_failures(tenant["id"], 1))
        await stack.eventually(await received(2), timeout=10)
        after = receiver.requests[1]
        assert len(after.headers["webhook-signature"].split(" ")) == 1
        assert after.verified(endpoint.secret)["type"] == "command.failed"
        with pytest.raises(WebhookVerificationError):
            after.verified(previous)


async def test_nothing_is_lost_when_nats_is_killed_between_events(settings, sockets, nats_server: NatsServer):
    receiver = Receiver()
    async with webhook_stack(settings, sockets) as stack, receiving(receiver):
        tenant = await stack.tenant()
        endpoint = await add_endpoint(stack.settings, tenant["id"], receiver.url, ["device.bound"])
        screens = [await stack.screen(tenant["token"], f"Screen {i}") for i in range(6)]
        devices = [(await pair(stack, tenant["token"], screen))[1]["deviceId"] for screen in screens[:3]]

        async def first_ones() -> bool:
            return len(receiver.distinct_ids()) == 3

        await stack.eventually(first_ones, timeout=10)
        nats_server.kill()
        try:
            # Bound while the bus is away: provisioning's outbox keeps the events.
            devices += [(await pair(stack, tenant["token"], screen))[1]["deviceId"] for screen in screens[3:]]
            await asyncio.sleep(1)
            assert len(receiver.distinct_ids()) == 3
        finally:
            nats_server.start()

        async def all_of_them() -> bool:
            return len(receiver.distinct_ids()) == 6

        await stack.eventually(all_of_them, timeout=30, interval=0.2)
        delivered = {request.verified(endpoint.secret)["data"]["deviceId"] for request in receiver.requests}
        assert delivered == set(devices)
        assert {d["state"] for d in await deliveries(stack.settings, endpoint)} == {"delivered"}


async def test_registry_killed_mid_delivery_loses_nothing(settings, sockets, tmp_path: Path):
    receiver = Receiver(delay=1)
    async with webhook_stack(settings, sockets) as stack, receiving(receiver):
        tenant = await stack.tenant()
        endpoint = await add_endpoint(stack.settings, tenant["id"], receiver.url, ["command.failed"])
        await stack.stop_service("registry")  # from here on it runs as a process we can kill
        log = tmp_path / "registry.log"
        process = spawn("registry", stack.settings, log)
        try:
            await until_ready(stack, process, log, "registry")
            events = command_failures(tenant["id"], 12)
            await publish(stack.settings, events)

            async def mid_delivery() -> bool:
                # Every event fanned out (and so acked), and requests in flight.
                return len(await deliveries(stack.settings, endpoint)) == 12 and receiver.in_flight > 0

            await stack.eventually(mid_delivery, timeout=10)
            process.kill()
            process.wait()
            cut_off = receiver.distinct_ids()
            assert 0 < len(cut_off) < 12
            process = spawn("registry", stack.settings, log)
            await until_ready(stack, process, log, "registry")

            async def all_delivered() -> bool:
                return {d["state"] for d in await deliveries(stack.settings, endpoint)} == {"delivered"}

            # The attempts the kill cut off are sent again once their lease lapses (timeout + 5 s).
            await stack.eventually(all_delivered, timeout=30, interval=0.2)
        finally:
            process.kill()
            process.wait()
        assert receiver.distinct_ids() == {str(event.event_id) for event in events}
        assert len(receiver.requests) > 12  # at least once: what was in flight came twice
        for request in receiver.requests:
            assert request.verified(endpoint.secret)["type"] == "command.failed"


async def test_an_address_webhooks_may_not_reach_is_refused_at_connect_time(settings, sockets):
    receiver = Receiver()
    async with (
        webhook_stack(settings, sockets, webhook_allow_private_addresses=False) as stack,
        receiving(receiver),
    ):
        tenant = await stack.tenant()
        by_name = await add_endpoint(
            stack.settings, tenant["id"], f"http://localhost:{receiver.port}/hooks", ["command.failed"]
        )
        by_address = await add_endpoint(stack.settings, tenant["id"], receiver.url, ["command.failed"])
        await publish(stack.settings, command_failures(tenant["id"], 1))

        async def refused(endpoint: Any) -> Any:
            async def check() -> Any:
                log = await deliveries(stack.settings, endpoint)
                return log if log and log[0]["attempts"] >= 2 else None

            return check

        for endpoint in (by_name, by_address):
            (delivery,) = await stack.eventually(await refused(endpoint), timeout=10)
            assert delivery["state"] == "pending" and delivery["last_status_code"] is None
            assert delivery["last_error"].startswith("refused: ")
            assert "may not reach" in delivery["last_error"]
        assert receiver.requests == []


async def test_an_endpoint_failing_for_longer_than_allowed_is_turned_off(settings, sockets):
    failing, watcher = Receiver(status=500), Receiver()
    async with (
        webhook_stack(settings, sockets, webhook_disable_after_hours=1 / HOUR) as stack,
        receiving(failing, watcher),
    ):
        tenant = await stack.tenant()
        endpoint = await add_endpoint(stack.settings, tenant["id"], failing.url, ["command.failed"])
        watching = await add_endpoint(stack.settings, tenant["id"], watcher.url, ["webhook.disabled"])
        await publish(stack.settings, command_failures(tenant["id"], 2))

        async def told() -> bool:
            return len(watcher.requests) >= 1

        await stack.eventually(told, timeout=10)
        disabled = watcher.requests[0].verified(watching.secret)
        assert disabled["type"] == "webhook.disabled"
        assert disabled["data"]["webhookId"] == endpoint.id and disabled["data"]["reason"] == "failing"
        row = await endpoint_row(stack.settings, endpoint)
        assert (row["enabled"], row["disabled_reason"]) == (False, "failing")
        log = await deliveries(stack.settings, endpoint)
        assert {d["state"] for d in log} == {"failed"}
        assert max(d["attempts"] for d in log) >= 2 and {d["last_status_code"] for d in log} == {500}
        assert len(failing.requests) >= 3
