"""Webhook endpoints, as a tenant admin manages them: register one (its signing secret shown once),
list, read, change, delete, rotate the secret, ping it, and read and retry its deliveries.

What sends the deliveries — the events' consumer and the dispatcher — is the delivery side; this
module only writes the rows it reads (a ping's, a retried one) and wakes it with a NOTIFY."""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog
from aiohttp import web
from msgspec import UNSET

from services.registry import audit, lookup, queries
from services.registry.webhook_addresses import GuardedResolver, host_problem, url_problem
from services.registry.webhook_models import (
    DELIVERY_STATES,
    NewWebhook,
    WebhookDeliveryPage,
    WebhookPage,
    WebhookPatch,
    WebhookSecretRotated,
    WebhookWithSecret,
)
from shared.app_keys import SETTINGS
from shared.auth import principal_of, tenant_of
from shared.clock import utcnow
from shared.db import POOL
from shared.errors import BadRequest, Conflict, ErrorDetail
from shared.http import json_response, read_json, secret_response, uuid_param
from shared.pagination import choice_query, next_cursor, page_params

log = structlog.get_logger()

WEBHOOK_RESOLVER = web.AppKey("WEBHOOK_RESOLVER", GuardedResolver)
# A registration waits no longer than this for the URL's name to resolve: a name that takes longer
# is refused as one that does not resolve, not left to hold the request.
RESOLVE_TIMEOUT_SECONDS = 5
PING = "webhook.ping"

_new_webhook = msgspec.json.Decoder(NewWebhook)
_webhook_patch = msgspec.json.Decoder(WebhookPatch)
_encoder = msgspec.json.Encoder()


async def resolver_ctx(app: web.Application) -> AsyncIterator[None]:
    """The resolver that checks a registered URL's addresses, as the dispatcher's checks them."""
    app[WEBHOOK_RESOLVER] = GuardedResolver(allow_private=app[SETTINGS].webhook_allow_private_addresses)
    yield
    await app[WEBHOOK_RESOLVER].close()


def new_signing_secret() -> str:
    """Standard Webhooks' form: ``whsec_`` and the base64 of the HMAC key, 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def check_url(request: web.Request, url: str) -> None:
    """A 400 naming ``url`` unless webhooks may be sent there: its form (https unless plain http
    is allowed) and, unless private addresses are allowed, where its host resolves to. The
    dispatcher checks the addresses again at every connection."""
    settings = request.app[SETTINGS]
    if any(char <= " " or char == "\x7f" for char in url):
        problem: str | None = "must not contain spaces or control characters"
    else:
        problem = url_problem(url, allow_http=settings.webhook_allow_http)
    if problem is None:
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                problem = await host_problem(url, request.app[WEBHOOK_RESOLVER])
        except TimeoutError:
            problem = "names a host that does not resolve"
    if problem is not None:
        raise BadRequest(f"url {problem}", details=[ErrorDetail("url", "format")])


async def create_webhook(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request, _new_webhook)
    await check_url(request, body.url)
    most = request.app[SETTINGS].webhooks_per_tenant
    secret = new_signing_secret()
    async with request.app[POOL].acquire() as conn, conn.transaction():
        if await queries.webhooks.count_endpoints(conn, principal.tenant_id) >= most:
            raise Conflict(f"the tenant has {most} webhook endpoints, the most it may have: delete one first")
        webhook = await queries.webhooks.insert_endpoint(
            conn,
            principal.tenant_id,
            url=body.url,
            events=body.events,
            description=body.description,
            secret=secret,
        )
        await audit.record(request, conn, principal.tenant_id, principal.actor, "webhook.created", webhook.id)
    log.info("webhook_created", webhook_id=str(webhook.id), events=body.events)
    answer = WebhookWithSecret(**msgspec.structs.asdict(webhook), secret=secret)
    return secret_response(answer, status=201)


async def list_webhooks(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    after, limit = page_params(request)
    async with request.app[POOL].acquire() as conn:
        webhooks = await queries.webhooks.list_endpoints(conn, tenant_id, after=after, limit=limit)
    return json_response(WebhookPage(items=webhooks, next_cursor=next_cursor(webhooks, limit)))


async def get_webhook(request: web.Request) -> web.Response:
    return await lookup.by_path_id(request, queries.webhooks.get_endpoint)


async def update_webhook(request: web.Request) -> web.Response:
    principal = principal_of(request)
    webhook_id = uuid_param(request)
    body = await read_json(request, _webhook_patch)
    changes: dict[str, Any] = {
        name: value
        for name in ("url", "events", "description", "enabled")
        if (value := getattr(body, name)) is not UNSET
    }
    if "url" in changes:
        await check_url(request, changes["url"])
    async with request.app[POOL].acquire() as conn, conn.transaction():
        webhook = await queries.webhooks.update_endpoint(conn, principal.tenant_id, webhook_id, changes)
        await audit.record(request, conn, principal.tenant_id, principal.actor, "webhook.changed", webhook_id)
    log.info("webhook_changed", webhook_id=str(webhook_id), fields=sorted(changes))
    return json_response(webhook)


async def delete_webhook(request: web.Request) -> web.Response:
    principal = principal_of(request)
    webhook_id = uuid_param(request)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        await queries.webhooks.delete_endpoint(conn, principal.tenant_id, webhook_id)
        await audit.record(request, conn, principal.tenant_id, principal.actor, "webhook.deleted", webhook_id)
    log.info("webhook_deleted", webhook_id=str(webhook_id))
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    principal = principal_of(request)
    webhook_id = uuid_param(request)
    secret = new_signing_secret()
    grace_hours = request.app[SETTINGS].webhook_secret_grace_hours
    async with request.app[POOL].acquire() as conn, conn.transaction():
        webhook, previous_until = await queries.webhooks.rotate_secret(
            conn, principal.tenant_id, webhook_id, secret=secret, grace_hours=grace_hours
        )
        await audit.record(
            request, conn, principal.tenant_id, principal.actor, "webhook.secret_rotated", webhook_id
        )
    log.info("webhook_secret_rotated", webhook_id=str(webhook_id))
    answer = WebhookSecretRotated(
        **msgspec.structs.asdict(webhook), secret=secret, previous_secret_expires_at=previous_until
    )
    return secret_response(answer)


async def ping_webhook(request: web.Request) -> web.Response:
    """A ``webhook.ping`` delivery, queued like any event's: whatever the endpoint subscribed to."""
    principal = principal_of(request)
    webhook_id = uuid_param(request)
    payload = {"type": PING, "timestamp": utcnow(), "data": {"webhookId": webhook_id}}
    async with request.app[POOL].acquire() as conn, conn.transaction():
        webhook = await queries.webhooks.get_endpoint(conn, principal.tenant_id, webhook_id)
        if not webhook.enabled:
            raise Conflict("the webhook is disabled; enable it (PATCH enabled: true) before pinging it")
        delivery = await queries.webhooks.insert_due_delivery(
            conn,
            principal.tenant_id,
            webhook_id,
            message_id=str(uuid.uuid4()),
            event_type=PING,
            payload=_encoder.encode(payload).decode(),
        )
        await queries.webhooks.notify_dispatcher(conn)
        await audit.record(request, conn, principal.tenant_id, principal.actor, "webhook.pinged", webhook_id)
    log.info("webhook_pinged", webhook_id=str(webhook_id), delivery_id=str(delivery.id))
    return json_response(delivery, status=202)


async def list_deliveries(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    webhook_id = uuid_param(request)
    after, limit = page_params(request)
    state = choice_query(request, "state", DELIVERY_STATES)
    async with request.app[POOL].acquire() as conn:
        await queries.webhooks.get_endpoint(conn, tenant_id, webhook_id)
        deliveries = await queries.webhooks.list_deliveries(
            conn, webhook_id, state=state, after=after, limit=limit
        )
    return json_response(WebhookDeliveryPage(items=deliveries, next_cursor=next_cursor(deliveries, limit)))


async def get_delivery(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    webhook_id = uuid_param(request)
    delivery_id = uuid_param(request, "deliveryId")
    async with request.app[POOL].acquire() as conn:
        delivery = await queries.webhooks.get_delivery(conn, tenant_id, webhook_id, delivery_id)
    return json_response(delivery)


async def retry_delivery(request: web.Request) -> web.Response:
    """A delivered or failed delivery, pending again and due now (its attempts so far kept)."""
    principal = principal_of(request)
    webhook_id = uuid_param(request)
    delivery_id = uuid_param(request, "deliveryId")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        # The endpoint is read, not locked: one row lock only, so no deadlock with the dispatcher.
        webhook = await queries.webhooks.get_endpoint(conn, principal.tenant_id, webhook_id)
        state = await queries.webhooks.lock_delivery_state(conn, principal.tenant_id, webhook_id, delivery_id)
        if state == "pending":
            raise Conflict("the delivery is pending already: it is attempted again at its nextAttemptAt")
        if not webhook.enabled:
            raise Conflict("the webhook is disabled; enable it (PATCH enabled: true) before retrying")
        delivery = await queries.webhooks.make_due_again(conn, delivery_id)
        await queries.webhooks.notify_dispatcher(conn)
        await audit.record(
            request, conn, principal.tenant_id, principal.actor, "webhook.delivery_retried", delivery_id
        )
    log.info("webhook_delivery_retried", webhook_id=str(webhook_id), delivery_id=str(delivery_id))
    return json_response(delivery, status=202)
