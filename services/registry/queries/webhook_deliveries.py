"""Webhook deliveries as the fan-out queues them and the dispatcher claims, sends and settles them;
and what the system changes on an endpoint (its failing streak, turning it off).

A delivery is claimed by pushing its ``next_attempt_at`` past the attempt's longest life (a lease):
every replica claims with ``FOR UPDATE SKIP LOCKED``, so each due delivery goes to one of them, and
one that dies mid-attempt leaves the delivery to be claimed again once the lease lapses."""

from __future__ import annotations

import uuid

import msgspec

from shared.db import Connection

# Woken on commit of new deliveries (the fan-out, and an admin's ping or retry).
CHANNEL = "registry_webhooks"


class DueDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """A claimed delivery and what sending it needs from its endpoint."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    tenant_id: uuid.UUID
    message_id: str
    payload: str
    attempts: int
    url: str
    # The current secret first, then the previous one while its grace period lasts.
    secrets: list[str]
    # The span the delivery continues (W3C Trace Context), None for one queued outside any trace.
    traceparent: str | None = None
    tracestate: str | None = None


class Backlog(msgspec.Struct, frozen=True, kw_only=True):
    retrying: int  # pending deliveries that failed at least once
    oldest_age_seconds: float  # of the oldest pending delivery (0 when none)


async def queue_event(
    conn: Connection,
    tenant_id: uuid.UUID,
    message_id: str,
    event_type: str,
    payload: str,
    *,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> int:
    """A delivery, due now, to each enabled endpoint of the tenant subscribed to ``event_type``;
    none again for an endpoint that has one of ``message_id`` (the bus redelivers). Wakes the
    dispatchers at commit when there is any. Returns how many were queued. ``traceparent`` (and
    ``tracestate``): the event's, which its deliveries continue."""
    status = await conn.execute(
        "INSERT INTO webhook_deliveries (id, endpoint_id, tenant_id, message_id, event_type, payload,"
        " next_attempt_at, traceparent, tracestate)"
        " SELECT gen_random_uuid(), id, tenant_id, $2, $3, $4, now(), $5, $6 FROM webhook_endpoints"
        " WHERE tenant_id = $1 AND enabled AND $3 = ANY(events)"
        " ON CONFLICT (endpoint_id, message_id) DO NOTHING",
        tenant_id,
        message_id,
        event_type,
        payload,
        traceparent,
        tracestate,
    )
    queued = int(status.rsplit(" ", 1)[1])
    if queued:
        await conn.execute(f"NOTIFY {CHANNEL}")
    return queued


async def claim_due(
    conn: Connection,
    in_flight: dict[uuid.UUID, int],
    *,
    per_endpoint: int,
    limit: int,
    lease_seconds: float,
) -> list[DueDelivery]:
    """Claim due deliveries, the soonest due first, at most what each endpoint's free capacity
    (``per_endpoint`` less its ``in_flight``) allows and ``limit`` in all.

    Endpoint by endpoint (LATERAL ... LIMIT), so one endpoint's backlog never fills the batch:
    the endpoints with the oldest due work come first, each with no more than it may take. A
    look costs an index probe per enabled endpoint, whatever the backlog (a receiver down for a
    day leaves a long one)."""
    rows = await conn.fetch(
        """
        WITH busy AS (
            SELECT endpoint_id, in_flight FROM unnest($1::uuid[], $2::int[]) AS b (endpoint_id, in_flight)
        ), ready AS (
            SELECT e.id, $3 - coalesce(b.in_flight, 0) AS free
            FROM webhook_endpoints e
            LEFT JOIN busy b ON b.endpoint_id = e.id
            CROSS JOIN LATERAL (
                SELECT next_attempt_at FROM webhook_deliveries
                WHERE endpoint_id = e.id AND state = 'pending' AND next_attempt_at <= now()
                ORDER BY next_attempt_at LIMIT 1
            ) first_due
            WHERE e.enabled AND $3 - coalesce(b.in_flight, 0) > 0
            ORDER BY first_due.next_attempt_at LIMIT $4
        ), claimed AS (
            SELECT d.id FROM ready CROSS JOIN LATERAL (
                SELECT id FROM webhook_deliveries
                WHERE endpoint_id = ready.id AND state = 'pending' AND next_attempt_at <= now()
                ORDER BY next_attempt_at LIMIT ready.free
                FOR UPDATE SKIP LOCKED
            ) d
            LIMIT $4
        )
        UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => $5)
        FROM claimed, webhook_endpoints e
        WHERE d.id = claimed.id AND e.id = d.endpoint_id
        RETURNING d.id, d.endpoint_id, d.tenant_id, d.message_id, d.payload, d.attempts, e.url,
            array_remove(ARRAY[e.secret, CASE WHEN e.previous_secret_until > now()
                THEN e.previous_secret END], NULL) AS secrets, d.traceparent, d.tracestate
        """,
        list(in_flight),
        list(in_flight.values()),
        per_endpoint,
        limit,
        lease_seconds,
    )
    return [DueDelivery(**dict(row)) for row in rows]


async def seconds_to_next_due(conn: Connection) -> float | None:
    """How long until the next pending delivery not yet due comes due (a retry, or a lapsing
    lease); None when none is waiting."""
    return await conn.fetchval(
        "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 FROM webhook_deliveries"
        " WHERE state = 'pending' AND next_attempt_at > now()"
    )


async def record_delivered(conn: Connection, delivered: list[tuple[DueDelivery, int]]) -> int:
    """Receivers took these (each with its status code): their endpoints' failing streaks end
    (their rows locked first, in id order: the lock order of every settling) and the deliveries
    are done. Returns how many were still pending (one whose lease had lapsed may have been sent
    again and settled already)."""
    endpoint_ids = sorted({delivery.endpoint_id for delivery, _ in delivered})
    await conn.execute(
        "UPDATE webhook_endpoints SET last_success_at = now(), failing_since = NULL WHERE id IN ("
        " SELECT id FROM webhook_endpoints WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE)",
        endpoint_ids,
    )
    status = await conn.execute(
        "UPDATE webhook_deliveries d SET state = 'delivered', attempts = attempts + 1,"
        " last_status_code = o.status, last_error = NULL, last_attempt_at = now(),"
        " delivered_at = now(), next_attempt_at = NULL"
        " FROM unnest($1::uuid[], $2::int[]) AS o (id, status) WHERE d.id = o.id AND d.state = 'pending'",
        [delivery.id for delivery, _ in delivered],
        [status for _, status in delivered],
    )
    return int(status.rsplit(" ", 1)[1])


async def record_failure(
    conn: Connection,
    delivery: DueDelivery,
    *,
    status_code: int | None,
    error: str,
    retry_in_seconds: float | None,
    retry_for_seconds: float,
) -> str | None:
    """A failed attempt: retried in ``retry_in_seconds`` (but never past the delivery's retry
    window, ``retry_for_seconds`` from its creation: its last attempt is at the window's end), or
    failed for good once the window is spent or when ``retry_in_seconds`` is None. Returns the
    delivery's state, None when it was settled already."""
    return await conn.fetchval(
        """
        UPDATE webhook_deliveries SET attempts = attempts + 1, last_status_code = $2, last_error = $3,
            last_attempt_at = now(),
            state = CASE WHEN $4::float8 IS NULL OR now() >= created_at + make_interval(secs => $5)
                THEN 'failed' ELSE 'pending' END,
            next_attempt_at = CASE WHEN $4::float8 IS NULL OR now() >= created_at + make_interval(secs => $5)
                THEN NULL
                ELSE least(now() + make_interval(secs => $4), created_at + make_interval(secs => $5)) END
        WHERE id = $1 AND state = 'pending' RETURNING state
        """,
        delivery.id,
        status_code,
        error,
        retry_in_seconds,
        retry_for_seconds,
    )


async def endpoint_failing_too_long(
    conn: Connection, endpoint_id: uuid.UUID, disable_after_seconds: float
) -> bool:
    """Note a failure on the endpoint (its streak starts at the first); True when the streak has
    gone on longer than ``disable_after_seconds`` and the endpoint is still on."""
    return bool(
        await conn.fetchval(
            "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, now()) WHERE id = $1"
            " RETURNING enabled AND failing_since < now() - make_interval(secs => $2)",
            endpoint_id,
            disable_after_seconds,
        )
    )


async def turn_off_endpoint(conn: Connection, endpoint_id: uuid.UUID, reason: str) -> bool:
    """The system turns the endpoint off (``reason``: 'gone' or 'failing'); False when it was off."""
    return bool(
        await conn.fetchval(
            "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = now()"
            " WHERE id = $1 AND enabled RETURNING true",
            endpoint_id,
            reason,
        )
    )


async def fail_pending(conn: Connection, endpoint_id: uuid.UUID) -> int:
    """The endpoint's pending deliveries fail (it was turned off); returns how many."""
    status = await conn.execute(
        "UPDATE webhook_deliveries SET state = 'failed', next_attempt_at = NULL"
        " WHERE endpoint_id = $1 AND state = 'pending'",
        endpoint_id,
    )
    return int(status.rsplit(" ", 1)[1])


async def backlog(conn: Connection) -> Backlog:
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE attempts > 0) AS retrying,"
        " coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_seconds"
        " FROM webhook_deliveries WHERE state = 'pending'"
    )
    assert row is not None
    return Backlog(**dict(row))


async def prune_settled(conn: Connection, retention_days: float, batch: int) -> int:
    """Delete at most ``batch`` settled deliveries older than the retention; returns how many went."""
    status = await conn.execute(
        "DELETE FROM webhook_deliveries WHERE id = ANY (ARRAY(SELECT id FROM webhook_deliveries"
        " WHERE state <> 'pending' AND created_at < now() - make_interval(secs => $1::float8 * 86400)"
        " LIMIT $2))",
        retention_days,
        batch,
    )
    return int(status.rsplit(" ", 1)[1])
