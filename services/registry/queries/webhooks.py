"""Webhook endpoints and their delivery log, as the admin manages and reads them (the delivery
side's SQL — claiming due deliveries, recording attempts — is its own)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from services.registry.queries import rows
from services.registry.webhook_models import Webhook, WebhookDelivery, WebhookDeliveryDetail
from shared import trace_context
from shared.db import Connection
from shared.pagination import Cursor

_ENDPOINT_COLUMNS = "id, url, events, description, enabled, disabled_reason, created_at, updated_at"
_DELIVERY_COLUMNS = (
    "id, message_id AS event_id, event_type, state, attempts, last_status_code, last_error,"
    " last_attempt_at, next_attempt_at, created_at, delivered_at"
)
NO_SUCH_WEBHOOK = "no such webhook"
NO_SUCH_DELIVERY = "no such delivery"
# The dispatcher LISTENs on this channel: a NOTIFY in the transaction that made a delivery due
# wakes it at the commit instead of at its next look.
DISPATCH_CHANNEL = "registry_webhooks"


async def count_endpoints(conn: Connection, tenant_id: uuid.UUID) -> int:
    """The tenant's endpoints, counted under a lock of the tenant's row, so that two registrations
    at once cannot both slip under the limit (the lock lets the tenant's other writes through)."""
    await conn.execute("SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE", tenant_id)
    return await conn.fetchval("SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $1", tenant_id)


async def insert_endpoint(
    conn: Connection,
    tenant_id: uuid.UUID,
    *,
    url: str,
    events: list[str],
    description: str | None,
    secret: str,
) -> Webhook:
    row = await conn.fetchrow(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, events, description, secret)"
        f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_ENDPOINT_COLUMNS}",
        uuid.uuid4(),
        tenant_id,
        url,
        events,
        description,
        secret,
    )
    assert row is not None  # an INSERT … RETURNING: always its row
    return Webhook(**row)


async def get_endpoint(
    conn: Connection, tenant_id: uuid.UUID, webhook_id: uuid.UUID, *, lock: bool = False
) -> Webhook:
    row = await conn.fetchrow(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2"
        + (" FOR UPDATE" if lock else ""),
        webhook_id,
        tenant_id,
    )
    return Webhook(**rows.found(row, NO_SUCH_WEBHOOK))


async def list_endpoints(
    conn: Connection, tenant_id: uuid.UUID, *, after: Cursor | None, limit: int
) -> list[Webhook]:
    found = await conn.fetch(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1"
        " AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))"
        " ORDER BY created_at, id LIMIT $4",
        tenant_id,
        after.created_at if after else None,
        after.id if after else None,
        limit,
    )
    return [Webhook(**row) for row in found]


async def update_endpoint(
    conn: Connection, tenant_id: uuid.UUID, webhook_id: uuid.UUID, changes: dict[str, Any]
) -> Webhook:
    """``changes``: new values of url, events, description and enabled (those given). Enabling
    clears why the system turned the endpoint off and the failing streak it counted; disabling
    is an admin's, so it has no reason."""
    enabled = changes.get("enabled")
    row = await conn.fetchrow(
        "UPDATE webhook_endpoints SET"
        " url = CASE WHEN $3 THEN $4 ELSE url END,"
        " events = CASE WHEN $5 THEN $6::text[] ELSE events END,"
        " description = CASE WHEN $7 THEN $8 ELSE description END,"
        " enabled = coalesce($9, enabled),"
        " disabled_reason = CASE WHEN $9 IS NOT NULL THEN NULL ELSE disabled_reason END,"
        " failing_since = CASE WHEN $9 THEN NULL ELSE failing_since END,"
        " updated_at = now()"
        f" WHERE id = $1 AND tenant_id = $2 RETURNING {_ENDPOINT_COLUMNS}",
        webhook_id,
        tenant_id,
        "url" in changes,
        changes.get("url"),
        "events" in changes,
        changes.get("events"),
        "description" in changes,
        changes.get("description"),
        enabled,
    )
    return Webhook(**rows.found(row, NO_SUCH_WEBHOOK))


async def delete_endpoint(conn: Connection, tenant_id: uuid.UUID, webhook_id: uuid.UUID) -> None:
    """The endpoint and, by the foreign key's cascade, its delivery log."""
    row = await conn.fetchrow(
        "DELETE FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2 RETURNING id", webhook_id, tenant_id
    )
    rows.found(row, NO_SUCH_WEBHOOK)


async def rotate_secret(
    conn: Connection, tenant_id: uuid.UUID, webhook_id: uuid.UUID, *, secret: str, grace_hours: float
) -> tuple[Webhook, datetime]:
    """The new secret signs from now on; the one it replaces signs alongside for the grace period
    (a secret still in its grace from an earlier rotation is dropped: two sign at most)."""
    row = await conn.fetchrow(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3,"
        " previous_secret_until = now() + make_interval(secs => $4), updated_at = now()"
        f" WHERE id = $1 AND tenant_id = $2 RETURNING {_ENDPOINT_COLUMNS}, previous_secret_until",
        webhook_id,
        tenant_id,
        secret,
        grace_hours * 3600,
    )
    found = dict(rows.found(row, NO_SUCH_WEBHOOK))
    until = found.pop("previous_secret_until")
    return Webhook(**found), until


async def insert_due_delivery(
    conn: Connection,
    tenant_id: uuid.UUID,
    webhook_id: uuid.UUID,
    *,
    message_id: str,
    event_type: str,
    payload: str,
) -> WebhookDelivery:
    """A pending delivery due now (the caller notifies the dispatcher in the same transaction),
    continuing the trace of the request that asked for it."""
    span = trace_context.current()
    row = await conn.fetchrow(
        "INSERT INTO webhook_deliveries (id, endpoint_id, tenant_id, message_id, event_type, payload,"
        " next_attempt_at, traceparent, tracestate)"
        f" VALUES ($1, $2, $3, $4, $5, $6, now(), $7, $8) RETURNING {_DELIVERY_COLUMNS}",
        uuid.uuid4(),
        webhook_id,
        tenant_id,
        message_id,
        event_type,
        payload,
        span and span.traceparent,
        span and span.tracestate,
    )
    assert row is not None  # an INSERT … RETURNING: always its row
    return WebhookDelivery(**row)


async def notify_dispatcher(conn: Connection) -> None:
    await conn.execute("SELECT pg_notify($1, '')", DISPATCH_CHANNEL)


async def list_deliveries(
    conn: Connection,
    webhook_id: uuid.UUID,
    *,
    state: str | None,
    after: Cursor | None,
    limit: int,
) -> list[WebhookDelivery]:
    """Newest first; ``after`` is the last of the previous (newer) page."""
    found = await conn.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1"
        " AND ($2::text IS NULL OR state = $2)"
        " AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))"
        " ORDER BY created_at DESC, id DESC LIMIT $5",
        webhook_id,
        state,
        after.created_at if after else None,
        after.id if after else None,
        limit,
    )
    return [WebhookDelivery(**row) for row in found]


async def get_delivery(
    conn: Connection, tenant_id: uuid.UUID, webhook_id: uuid.UUID, delivery_id: uuid.UUID
) -> WebhookDeliveryDetail:
    row = await conn.fetchrow(
        f"SELECT {_DELIVERY_COLUMNS}, payload FROM webhook_deliveries"
        " WHERE id = $1 AND endpoint_id = $2 AND tenant_id = $3",
        delivery_id,
        webhook_id,
        tenant_id,
    )
    found = dict(rows.found(row, NO_SUCH_DELIVERY))
    return WebhookDeliveryDetail(**{**found, "payload": msgspec.Raw(found["payload"].encode())})


async def lock_delivery_state(
    conn: Connection, tenant_id: uuid.UUID, webhook_id: uuid.UUID, delivery_id: uuid.UUID
) -> str:
    """The delivery's state, its row locked against the dispatcher for the retry's transaction."""
    row = await conn.fetchrow(
        "SELECT state FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2 AND tenant_id = $3"
        " FOR UPDATE",
        delivery_id,
        webhook_id,
        tenant_id,
    )
    return rows.found(row, NO_SUCH_DELIVERY)["state"]


async def make_due_again(conn: Connection, delivery_id: uuid.UUID) -> WebhookDelivery:
    """Pending and due now, its attempts and its last attempt's outcome kept."""
    row = await conn.fetchrow(
        "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now(), delivered_at = NULL"
        f" WHERE id = $1 RETURNING {_DELIVERY_COLUMNS}",
        delivery_id,
    )
    assert row is not None  # locked by lock_delivery_state in this transaction
    return WebhookDelivery(**row)
