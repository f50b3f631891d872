"""The webhook management API, an admin's side, through the entry point: register (the secret shown
once, in Standard Webhooks' form), list, read, change, delete, rotate, ping, the delivery log and
its retry; every bad input in the one error shape; scopes and tenants. Whether a delivery is sent
is the delivery side's test (one ping here arrives, signed): elsewhere a delivery's later states are
written into its row as the dispatcher would, to an URL where nothing listens."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import pytest
from standardwebhooks import Webhook as StandardWebhook

from services.registry.queries.webhooks import DISPATCH_CHANNEL
from services.registry.webhook_events import WEBHOOK_EVENT_TYPES
from shared.settings import Settings
from tests.bad_input import OVERSIZED, assert_error, post_raw
from tests.bad_input import token as token
from tests.stack import Stack, new_id
from tests.test_scopes import scoped_token
from tests.webhooks import Receiver

URL = "http://127.0.0.1:9/hooks"
FIELDS = {"id", "url", "events", "description", "enabled", "disabledReason", "createdAt", "updatedAt"}
DELIVERY_FIELDS = {
    "id",
    "eventId",
    "eventType",
    "state",
    "attempts",
    "lastStatusCode",
    "lastError",
    "lastAttemptAt",
    "nextAttemptAt",
    "createdAt",
    "deliveredAt",
}


async def register(stack: Stack, token: str, **body: Any) -> dict[str, Any]:
    status, webhook, response = await stack.call(
        "POST", "/v1/webhooks", token=token, json={"url": URL, "events": ["screen.offline"], **body}
    )
    assert status == 201, webhook
    assert response.headers["Cache-Control"] == "no-store"
    return webhook


async def ping(stack: Stack, token: str, webhook_id: str) -> dict[str, Any]:
    status, delivery, _ = await stack.call("POST", f"/v1/webhooks/{webhook_id}/ping", token=token)
    assert status == 202, delivery
    return delivery


async def database(stack: Stack) -> asyncpg.Connection:
    return await asyncpg.connect(stack.settings.database_url, server_settings={"search_path": "registry"})


async def settle(stack: Stack, delivery_id: str, state: str, status_code: int) -> None:
    """What the dispatcher writes after an attempt: delivered (2xx) or failed for good."""
    conn = await database(stack)
    try:
        await conn.execute(
            "UPDATE webhook_deliveries SET state = $2, attempts = 3, last_status_code = $3,"
            " last_attempt_at = now(), next_attempt_at = NULL,"
            " delivered_at = CASE WHEN $2 = 'delivered' THEN now() END WHERE id = $1",
            delivery_id,
            state,
            status_code,
        )
    finally:
        await conn.close()


# ---- the round trip ---------------------------------------------------------------------------


async def test_register_read_change_and_delete(stack: Stack, token: str) -> None:
    created = await register(stack, token, events=["device.bound", "screen.offline"], description="On call")
    assert set(created) == FIELDS | {"secret"}
    assert created["url"] == URL
    assert created["events"] == ["device.bound", "screen.offline"]
    assert (created["description"], created["enabled"], created["disabledReason"]) == ("On call", True, None)
    webhook_id = created["id"]
    path = f"/v1/webhooks/{webhook_id}"

    status, read, _ = await stack.call("GET", path, token=token)
    assert status == 200
    assert read == {name: created[name] for name in FIELDS}  # the secret is never shown again
    status, page, _ = await stack.call("GET", "/v1/webhooks", token=token)
    assert status == 200 and page == {"items": [read], "nextCursor": None}

    status, changed, _ = await stack.call(
        "PATCH",
        path,
        token=token,
        json={"url": "https://127.0.0.1:8443/in", "events": ["command.failed"], "description": None},
    )
    assert status == 200, changed
    assert (changed["url"], changed["events"], changed["description"]) == (
        "https://127.0.0.1:8443/in",
        ["command.failed"],
        None,
    )
    assert changed["updatedAt"] > created["updatedAt"] and changed["createdAt"] == created["createdAt"]
    # Only what is sent changes.
    status, disabled, _ = await stack.call("PATCH", path, token=token, json={"enabled": False})
    assert status == 200
    assert (disabled["enabled"], disabled["disabledReason"], disabled["events"]) == (
        False,
        None,
        ["command.failed"],
    )
    assert "secret" not in disabled

    status, body, _ = await stack.call("DELETE", path, token=token)
    assert (status, body) == (204, b"")
    assert_error(await stack.call("GET", path, token=token), 404, "not_found")
    assert_error(await stack.call("DELETE", path, token=token), 404, "not_found")
    assert (await stack.call("GET", "/v1/webhooks", token=token))[1]["items"] == []

    status, trail, _ = await stack.call("GET", "/v1/audit", token=token)
    assert [entry["action"] for entry in trail["items"] if entry["resourceId"] == webhook_id] == [
        "webhook.deleted",
        "webhook.changed",
        "webhook.changed",
        "webhook.created",
    ]
    assert created["secret"] not in str(trail)


async def test_the_secret_is_a_standard_webhooks_key_and_rotates(stack: Stack, token: str) -> None:
    created = await register(stack, token)
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) <= 32
    # The reference library takes it as it is, and checks what it signed with it.
    signer = StandardWebhook(secret)
    signed_at = datetime.now(UTC)
    signature = signer.sign("msg_1", signed_at, '{"type":"webhook.ping"}')
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(signed_at.timestamp()))}
    StandardWebhook(secret).verify('{"type":"webhook.ping"}', {**headers, "webhook-signature": signature})

    path = f"/v1/webhooks/{created['id']}/rotate-secret"
    status, rotated, response = await stack.call("POST", path, token=token)
    assert status == 200, rotated
    assert response.headers["Cache-Control"] == "no-store"
    assert set(rotated) == FIELDS | {"secret", "previousSecretExpiresAt"}
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret
    conn = await database(stack)
    try:
        row = await conn.fetchrow(
            "SELECT secret, previous_secret, previous_secret_until - now() AS grace"
            " FROM webhook_endpoints WHERE id = $1",
            created["id"],
        )
    finally:
        await conn.close()
    assert row is not None
    assert (row["secret"], row["previous_secret"]) == (rotated["secret"], secret)
    grace = stack.settings.webhook_secret_grace_hours * 3600
    assert grace - 60 < row["grace"].total_seconds() <= grace
    status, read, _ = await stack.call("GET", f"/v1/webhooks/{created['id']}", token=token)
    assert "secret" not in read
    status, trail, _ = await stack.call("GET", "/v1/audit", token=token)
    assert trail["items"][0]["action"] == "webhook.secret_rotated"
    assert secret not in str(trail) and rotated["secret"] not in str(trail)


async def test_a_ping_is_a_due_delivery_that_wakes_the_dispatcher_and_arrives_signed(
    stack: Stack, token: str
) -> None:
    receiver = await Receiver().start()
    try:
        webhook = await register(stack, token, url=receiver.url)
        listener = await database(stack)
        woken: asyncio.Queue[str] = asyncio.Queue()
        await listener.add_listener(DISPATCH_CHANNEL, lambda *args: woken.put_nowait(args[2]))
        try:
            delivery = await ping(stack, token, webhook["id"])
            await asyncio.wait_for(woken.get(), timeout=5)
        finally:
            await listener.close()
        assert set(delivery) == DELIVERY_FIELDS
        assert (delivery["eventType"], delivery["state"], delivery["attempts"]) == (
            "webhook.ping",
            "pending",
            0,
        )
        assert delivery["nextAttemptAt"] is not None and delivery["deliveredAt"] is None

        path = f"/v1/webhooks/{webhook['id']}/deliveries"

        async def delivered() -> Any:
            status, page, _ = await stack.call("GET", path, token=token)
            assert status == 200, page
            return page["items"][0]["state"] == "delivered" and page

        page = await stack.eventually(delivered, timeout=10)
        [sent] = receiver.requests
        body = sent.verified(webhook["secret"])
        assert body == {
            "type": "webhook.ping",
            "timestamp": body["timestamp"],
            "data": {"webhookId": webhook["id"]},
        }
        assert sent.id == delivery["eventId"]
        [logged] = page["items"]
        assert (logged["id"], logged["attempts"], logged["lastStatusCode"]) == (delivery["id"], 1, 200)
        status, detail, _ = await stack.call("GET", f"{path}/{delivery['id']}", token=token)
        assert status == 200
        assert detail == {**logged, "payload": body}
        assert body["timestamp"].startswith(delivery["createdAt"][:10])
        # Another ping is another delivery, with an id of its own.
        second = await ping(stack, token, webhook["id"])
        assert second["eventId"] != delivery["eventId"]
    finally:
        await receiver.stop()


async def test_a_settled_delivery_is_retried_once_pending(stack: Stack, token: str) -> None:
    webhook = await register(stack, token)
    delivery = await ping(stack, token, webhook["id"])
    retry = f"/v1/webhooks/{webhook['id']}/deliveries/{delivery['id']}/retry"
    assert_error(await stack.call("POST", retry, token=token), 409, "conflict")  # pending already

    await settle(stack, delivery["id"], "failed", 500)
    status, again, _ = await stack.call("POST", retry, token=token)
    assert status == 202, again
    assert (again["state"], again["attempts"], again["lastStatusCode"]) == ("pending", 3, 500)
    assert again["nextAttemptAt"] is not None and again["eventId"] == delivery["eventId"]

    await settle(stack, delivery["id"], "delivered", 204)
    status, page, _ = await stack.call(
        "GET", f"/v1/webhooks/{webhook['id']}/deliveries?state=delivered", token=token
    )
    assert [item["id"] for item in page["items"]] == [delivery["id"]]
    assert page["items"][0]["deliveredAt"] is not None
    # A disabled endpoint neither retries nor pings.
    await stack.call("PATCH", f"/v1/webhooks/{webhook['id']}", token=token, json={"enabled": False})
    assert_error(await stack.call("POST", retry, token=token), 409, "conflict")
    assert_error(await stack.call("POST", f"/v1/webhooks/{webhook['id']}/ping", token=token), 409, "conflict")
    status, again, _ = await stack.call(
        "PATCH", f"/v1/webhooks/{webhook['id']}", token=token, json={"enabled": True}
    )
    assert status == 200 and again["enabled"] is True
    status, again, _ = await stack.call("POST", retry, token=token)
    assert status == 202 and again["state"] == "pending" and again["deliveredAt"] is None
    status, trail, _ = await stack.call("GET", "/v1/audit?limit=1", token=token)
    assert (trail["items"][0]["action"], trail["items"][0]["resourceId"]) == (
        "webhook.delivery_retried",
        delivery["id"],
    )


async def test_re_enabling_clears_what_the_system_recorded(stack: Stack, token: str) -> None:
    webhook = await register(stack, token)
    conn = await database(stack)
    try:
        await conn.execute(
            "UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'failing',"
            " failing_since = now() - interval '5 days' WHERE id = $1",
            webhook["id"],
        )
        path = f"/v1/webhooks/{webhook['id']}"
        status, read, _ = await stack.call("GET", path, token=token)
        assert (read["enabled"], read["disabledReason"]) == (False, "failing")
        status, enabled, _ = await stack.call("PATCH", path, token=token, json={"enabled": True})
        assert status == 200 and (enabled["enabled"], enabled["disabledReason"]) == (True, None)
        assert (
            await conn.fetchval("SELECT failing_since FROM webhook_endpoints WHERE id = $1", webhook["id"])
            is None
        )
    finally:
        await conn.close()


async def test_deleting_an_endpoint_deletes_its_deliveries(stack: Stack, token: str) -> None:
    webhook = await register(stack, token)
    delivery = await ping(stack, token, webhook["id"])
    status, _, _ = await stack.call("DELETE", f"/v1/webhooks/{webhook['id']}", token=token)
    assert status == 204
    conn = await database(stack)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE id = $1", delivery["id"]) == 0
        )
    finally:
        await conn.close()


async def test_lists_page(stack: Stack, token: str) -> None:
    created = [(await register(stack, token, description=str(i)))["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await stack.call("GET", f"/v1/webhooks{query}", token=token)
        assert status == 200 and len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        if not (cursor := page["nextCursor"]):
            break
    assert seen == created  # oldest first

    deliveries = [(await ping(stack, token, created[0]))["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await stack.call("GET", f"/v1/webhooks/{created[0]}/deliveries{query}", token=token)
        assert status == 200 and len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        if not (cursor := page["nextCursor"]):
            break
    assert seen == deliveries[::-1]  # newest first
    status, page, _ = await stack.call(
        "GET", f"/v1/webhooks/{created[0]}/deliveries?state=failed", token=token
    )
    assert page == {"items": [], "nextCursor": None}


# ---- who may ----------------------------------------------------------------------------------


async def test_another_tenants_webhooks_are_not_found(stack: Stack, token: str) -> None:
    webhook = await register(stack, token)
    delivery = await ping(stack, token, webhook["id"])
    other = (await stack.tenant("Other"))["token"]
    base = f"/v1/webhooks/{webhook['id']}"
    for method, path, body in [
        ("GET", base, None),
        ("PATCH", base, {"enabled": False}),
        ("DELETE", base, None),
        ("POST", f"{base}/rotate-secret", None),
        ("POST", f"{base}/ping", None),
        ("GET", f"{base}/deliveries", None),
        ("GET", f"{base}/deliveries/{delivery['id']}", None),
        ("POST", f"{base}/deliveries/{delivery['id']}/retry", None),
    ]:
        assert_error(await stack.call(method, path, token=other, json=body), 404, "not_found")
    assert (await stack.call("GET", "/v1/webhooks", token=other))[1]["items"] == []
    # ...and nothing of theirs changed.
    status, read, _ = await stack.call("GET", base, token=token)
    assert status == 200 and read["enabled"] is True


async def test_managing_webhooks_needs_clients_write(stack: Stack) -> None:
    tenant = await stack.tenant()
    webhook = await register(stack, tenant["token"])
    narrow = await scoped_token(stack, tenant, "screens:write screens:read audit:read")
    for method, path in [
        ("POST", "/v1/webhooks"),
        ("GET", "/v1/webhooks"),
        ("GET", f"/v1/webhooks/{webhook['id']}"),
        ("POST", f"/v1/webhooks/{webhook['id']}/ping"),
    ]:
        result = await stack.call(method, path, token=narrow, json={"url": URL, "events": ["device.bound"]})
        assert_error(result, 403, "forbidden")
        assert result[1]["message"] == "this call needs the scope clients:write"
    assert_error(await stack.call("GET", "/v1/webhooks"), 401, "unauthorized")
    allowed = await scoped_token(stack, tenant, "clients:write")
    assert (await register(stack, allowed))["id"]


# ---- bad input --------------------------------------------------------------------------------

BAD_BODIES = [
    ("missing-url", {"events": ["device.bound"]}, [("url", "required")]),
    ("missing-events", {"url": URL}, [("events", "required")]),
    ("empty-url", {"url": "", "events": ["device.bound"]}, [("url", "length")]),
    (
        "url-2049-chars",
        {"url": URL + "x" * (2049 - len(URL)), "events": ["device.bound"]},
        [("url", "length")],
    ),
    ("url-not-string", {"url": 5, "events": ["device.bound"]}, [("url", "type")]),
    ("not-a-url", {"url": "hooks", "events": ["device.bound"]}, [("url", "format")]),
    ("ftp-url", {"url": "ftp://127.0.0.1/x", "events": ["device.bound"]}, [("url", "format")]),
    ("url-with-user", {"url": "http://me:pw@127.0.0.1/", "events": ["device.bound"]}, [("url", "format")]),
    ("url-with-fragment", {"url": URL + "#x", "events": ["device.bound"]}, [("url", "format")]),
    ("url-with-newline", {"url": URL + "\n", "events": ["device.bound"]}, [("url", "format")]),
    ("url-bad-port", {"url": "http://127.0.0.1:99999/", "events": ["device.bound"]}, [("url", "format")]),
    (
        "host-not-resolving",
        {"url": "https://nothing.invalid/", "events": ["device.bound"]},
        [("url", "format")],
    ),
    ("empty-events", {"url": URL, "events": []}, [("events", "length")]),
    ("unknown-event", {"url": URL, "events": ["device.exploded"]}, [("events[0]", "enum")]),
    ("ping-not-subscribable", {"url": URL, "events": ["webhook.ping"]}, [("events[0]", "enum")]),
    ("events-not-list", {"url": URL, "events": "device.bound"}, [("events", "type")]),
    ("event-twice", {"url": URL, "events": ["device.bound", "device.bound"]}, [("events", "format")]),
    (
        "description-501-chars",
        {"url": URL, "events": ["device.bound"], "description": "x" * 501},
        [("description", "length")],
    ),
]


@pytest.mark.parametrize(("body", "details"), [c[1:] for c in BAD_BODIES], ids=[c[0] for c in BAD_BODIES])
async def test_register_refuses_bad_input(stack: Stack, token: str, body: Any, details: Any) -> None:
    assert_error(
        await stack.call("POST", "/v1/webhooks", token=token, json=body), 400, "invalid_request", details
    )


async def test_bad_input_is_named_in_words(stack: Stack, token: str) -> None:
    body = {"url": "ftp://x", "events": ["device.bound"]}
    _, error, _ = await stack.call("POST", "/v1/webhooks", token=token, json=body)
    assert error["message"] == "url must be an http or https URL"
    _, error, _ = await stack.call("POST", "/v1/webhooks", token=token, json={"url": URL, "events": ["x"]})
    assert error["message"].startswith("events[0] must be one of ") and "device.bound" in error["message"]


async def test_every_catalogue_event_may_be_subscribed(stack: Stack, token: str) -> None:
    webhook = await register(stack, token, events=list(WEBHOOK_EVENT_TYPES))
    assert webhook["events"] == list(WEBHOOK_EVENT_TYPES)


async def test_patch_refuses_bad_input(stack: Stack, token: str) -> None:
    webhook = await register(stack, token)
    path = f"/v1/webhooks/{webhook['id']}"
    for body, details in [
        ({"url": "ftp://127.0.0.1/"}, [("url", "format")]),
        ({"url": None}, [("url", "type")]),
        ({"events": []}, [("events", "length")]),
        ({"events": ["nope"]}, [("events[0]", "enum")]),
        ({"events": ["device.bound", "device.bound"]}, [("events", "format")]),
        ({"enabled": "yes"}, [("enabled", "type")]),
        ({"description": "x" * 501}, [("description", "length")]),
    ]:
        assert_error(await stack.call("PATCH", path, token=token, json=body), 400, "invalid_request", details)
    status, read, _ = await stack.call("GET", path, token=token)
    assert status == 200 and read == {name: webhook[name] for name in FIELDS}  # nothing changed


async def test_bodies_that_are_not_json(stack: Stack, token: str) -> None:
    assert_error(
        await post_raw(stack, "/v1/webhooks", "url=x", "text/plain", token=token),
        415,
        "unsupported_media_type",
    )
    assert_error(await post_raw(stack, "/v1/webhooks", b'{"url": ', token=token), 400, "invalid_request")
    assert_error(await post_raw(stack, "/v1/webhooks", OVERSIZED, token=token), 413, "payload_too_large")
    body = '{"url": "http://127.0.0.1/\\u0000", "events": ["device.bound"]}'
    assert_error(
        await post_raw(stack, "/v1/webhooks", body, token=token), 400, "invalid_request", [("url", "format")]
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/webhooks/not-a-uuid"),
        ("PATCH", "/v1/webhooks/not-a-uuid"),
        ("DELETE", "/v1/webhooks/not-a-uuid"),
        ("POST", "/v1/webhooks/not-a-uuid/rotate-secret"),
        ("POST", "/v1/webhooks/not-a-uuid/ping"),
        ("GET", "/v1/webhooks/not-a-uuid/deliveries"),
        ("GET", f"/v1/webhooks/{new_id()}"),
        ("POST", f"/v1/webhooks/{new_id()}/ping"),
        ("GET", f"/v1/webhooks/{new_id()}/deliveries"),
        ("GET", f"/v1/webhooks/{new_id()}/deliveries/{new_id()}"),
        ("GET", f"/v1/webhooks/{new_id()}/deliveries/x"),
        ("POST", f"/v1/webhooks/{new_id()}/deliveries/{new_id()}/retry"),
    ],
)
async def test_unknown_ids_are_not_found(stack: Stack, token: str, method: str, path: str) -> None:
    assert_error(await stack.call(method, path, token=token, json={}), 404, "not_found")


async def test_an_unknown_delivery_of_a_known_endpoint_is_not_found(stack: Stack, token: str) -> None:
    webhook = await register(stack, token)
    other = await register(stack, token)
    delivery = await ping(stack, token, other["id"])  # another endpoint's
    for method, suffix in [("GET", ""), ("POST", "/retry")]:
        path = f"/v1/webhooks/{webhook['id']}/deliveries/{delivery['id']}{suffix}"
        assert_error(await stack.call(method, path, token=token), 404, "not_found")


async def test_bad_list_queries(stack: Stack, token: str) -> None:
    webhook = await register(stack, token)
    for query, field in [("limit=0", "limit"), ("limit=x", "limit"), ("cursor=zz", "cursor")]:
        result = await stack.call("GET", f"/v1/webhooks?{query}", token=token)
        assert_error(result, 400, "invalid_request", fields=[field])
    for query, field in [("state=lost", "state"), ("limit=201", "limit"), ("cursor=%%", "cursor")]:
        result = await stack.call("GET", f"/v1/webhooks/{webhook['id']}/deliveries?{query}", token=token)
        assert_error(result, 400, "invalid_request", fields=[field])


class TestTheLimit:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return msgspec.structs.replace(settings, webhooks_per_tenant=3)

    async def test_a_tenant_registers_at_most_webhooks_per_tenant(self, stack: Stack, token: str) -> None:
        results = await asyncio.gather(
            *(
                stack.call("POST", "/v1/webhooks", token=token, json={"url": URL, "events": ["device.bound"]})
                for _ in range(6)
            )
        )
        assert sorted(status for status, _, _ in results) == [201] * 3 + [409] * 3
        refused = next(result for result in results if result[0] == 409)
        assert_error(refused, 409, "conflict")
        # Each tenant has its own; a deleted one makes room.
        other = (await stack.tenant("Other"))["token"]
        assert (await register(stack, other))["id"]
        first = next(body for status, body, _ in results if status == 201)
        await stack.call("DELETE", f"/v1/webhooks/{first['id']}", token=token)
        assert (await register(stack, token))["id"]


class TestWithoutPrivateAddresses:
    """As in production: https only, and no address inside."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return msgspec.structs.replace(
            settings, webhook_allow_private_addresses=False, webhook_allow_http=False
        )

    @pytest.mark.parametrize(
        "url",
        [
            "http://93.184.215.14/hooks",  # a public address, but plain http
            "https://127.0.0.1/hooks",
            "https://localhost:8443/hooks",
            "https://10.1.2.3/hooks",
            "https://192.168.0.10/hooks",
            "https://169.254.169.254/latest/meta-data/",
            "https://[::1]/hooks",
            "https://[::ffff:10.0.0.1]/hooks",
            "https://0.0.0.0/hooks",
        ],
    )
    async def test_register_refuses(self, stack: Stack, token: str, url: str) -> None:
        result = await stack.call(
            "POST", "/v1/webhooks", token=token, json={"url": url, "events": ["device.bound"]}
        )
        assert_error(result, 400, "invalid_request", [("url", "format")])

    async def test_a_public_address_is_taken_and_a_change_is_checked_too(
        self, stack: Stack, token: str
    ) -> None:
        status, webhook, _ = await stack.call(
            "POST",
            "/v1/webhooks",
            token=token,
            json={"url": "https://93.184.215.14/hooks", "events": ["device.bound"]},
        )
        assert status == 201, webhook
        result = await stack.call(
            "PATCH", f"/v1/webhooks/{webhook['id']}", token=token, json={"url": "https://169.254.169.254/"}
        )
        assert_error(result, 400, "invalid_request", [("url", "format")])
        assert "may not reach" in result[1]["message"]
