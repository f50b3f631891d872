"""Offline alerts: each screen's open alert and each venue's incidents.

Lock order, everywhere: the screen's row (when the caller changes it), then its venue's row, then
alert and incident rows. Whatever reads or writes a venue's alerts locks the venue first, so the
presence consumer, the unbinding consumer, the admin's changes and the sweep of every replica
never deadlock, and a venue's incident decision sees all of its alerts as they stand. Venues are
locked ``FOR NO KEY UPDATE``: that leaves new screens free to reference the venue meanwhile."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from services.registry.models import OpeningPeriod
from services.registry.queries.venues import opening_hours_of
from shared.db import Connection

AlertState = Literal["pending", "alerted", "folded"]


class AlertScreen(msgspec.Struct, frozen=True, kw_only=True):
    """A screen as its alert needs it; its venue's row locked."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    venue_id: uuid.UUID
    name: str
    paired: bool
    # The screen's own alert delay, else its venue's; None: the setting.
    delay_minutes: int | None


class ClosedAlert(msgspec.Struct, frozen=True, kw_only=True):
    state: AlertState
    incident_id: uuid.UUID | None


class DueVenue(msgspec.Struct, frozen=True, kw_only=True):
    """A venue with alerts come due, locked by this replica; ``now`` is the database's."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    timezone: str | None
    opening_hours: list[OpeningPeriod] | None
    now: datetime


class DueAlert(msgspec.Struct, frozen=True, kw_only=True):
    screen_id: uuid.UUID
    screen_name: str
    offline_since: datetime
    last_seen_at: datetime | None
    delay_minutes: int | None


async def lock_screen_venue(conn: Connection, screen_id: uuid.UUID) -> AlertScreen | None:
    row = await conn.fetchrow(
        "SELECT s.id, s.tenant_id, s.venue_id, s.name, s.state = 'active' AS paired,"
        " COALESCE(s.offline_alert_after_minutes, v.offline_alert_after_minutes) AS delay_minutes"
        " FROM screens s JOIN venues v ON v.id = s.venue_id WHERE s.id = $1 FOR NO KEY UPDATE OF v",
        screen_id,
    )
    return None if row is None else AlertScreen(**row)


async def lock_venue(conn: Connection, venue_id: uuid.UUID) -> None:
    await conn.execute("SELECT 1 FROM venues WHERE id = $1 FOR NO KEY UPDATE", venue_id)


async def open_alert(
    conn: Connection,
    screen: AlertScreen,
    *,
    offline_since: datetime,
    last_seen_at: datetime | None,
    due_at: datetime,
) -> None:
    """A pending alert for the screen; one still pending (an offline heard without the online
    between) starts again from this offline, one alerted or folded already stays as it is."""
    await conn.execute(
        "INSERT INTO screen_alerts (screen_id, tenant_id, venue_id, offline_since, last_seen_at, due_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (screen_id) DO UPDATE"
        " SET offline_since = excluded.offline_since, last_seen_at = excluded.last_seen_at,"
        " due_at = excluded.due_at WHERE screen_alerts.state = 'pending'",
        screen.id,
        screen.tenant_id,
        screen.venue_id,
        offline_since,
        last_seen_at,
        due_at,
    )


async def close_alert(conn: Connection, screen_id: uuid.UUID) -> ClosedAlert | None:
    """Delete the screen's open alert; what it was, or None if it had none."""
    row = await conn.fetchrow(
        "DELETE FROM screen_alerts WHERE screen_id = $1 RETURNING state, incident_id", screen_id
    )
    return None if row is None else ClosedAlert(**row)


async def close_incident_if_over(conn: Connection, incident_id: uuid.UUID) -> str | None:
    """Close the incident when no screen folded into it is offline any more; the venue's name
    if it closed it now, else None."""
    return await conn.fetchval(
        "UPDATE venue_incidents i SET closed_at = now() FROM venues v"
        " WHERE i.id = $1 AND v.id = i.venue_id AND i.closed_at IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM screen_alerts WHERE incident_id = $1) RETURNING v.name",
        incident_id,
    )


async def reschedule_pending(
    conn: Connection, venue_id: uuid.UUID, default_minutes: float, screen_id: uuid.UUID | None = None
) -> None:
    """Pending alerts of the venue (or of one screen of it) due again after the delay that now
    applies, counted from when the screen went offline (the sweep checks opening hours again)."""
    await conn.execute(
        "UPDATE screen_alerts a SET due_at = a.offline_since + make_interval(secs =>"
        " COALESCE(s.offline_alert_after_minutes, v.offline_alert_after_minutes, $2) * 60)"
        " FROM screens s, venues v WHERE s.id = a.screen_id AND v.id = a.venue_id"
        " AND a.venue_id = $1 AND a.state = 'pending' AND ($3::uuid IS NULL OR a.screen_id = $3)",
        venue_id,
        default_minutes,
        screen_id,
    )


# ---- the sweep -----------------------------------------------------------------------------------


async def lock_venue_with_due(conn: Connection) -> DueVenue | None:
    """A venue with pending alerts come due that no other replica holds (SKIP LOCKED: replicas
    share the work, and a venue is decided by one of them at a time)."""
    row = await conn.fetchrow(
        "SELECT v.id, v.tenant_id, v.name, v.timezone, v.opening_hours, now() AS now FROM venues v"
        " WHERE v.id IN (SELECT venue_id FROM screen_alerts WHERE state = 'pending' AND due_at <= now())"
        " LIMIT 1 FOR NO KEY UPDATE OF v SKIP LOCKED"
    )
    if row is None:
        return None
    return DueVenue(**{**row, "opening_hours": opening_hours_of(row["opening_hours"])})


async def due_alerts(conn: Connection, venue_id: uuid.UUID) -> list[DueAlert]:
    found = await conn.fetch(
        "SELECT a.screen_id, s.name AS screen_name, a.offline_since, a.last_seen_at,"
        " COALESCE(s.offline_alert_after_minutes, v.offline_alert_after_minutes) AS delay_minutes"
        " FROM screen_alerts a JOIN screens s ON s.id = a.screen_id JOIN venues v ON v.id = a.venue_id"
        " WHERE a.venue_id = $1 AND a.state = 'pending' AND a.due_at <= now()"
        " ORDER BY a.offline_since, a.screen_id",
        venue_id,
    )
    return [DueAlert(**row) for row in found]


async def postpone(conn: Connection, screen_ids: list[uuid.UUID], due_at: datetime) -> None:
    await conn.execute(
        "UPDATE screen_alerts SET due_at = $2 WHERE screen_id = ANY($1::uuid[])", screen_ids, due_at
    )


async def mark_alerted(conn: Connection, screen_id: uuid.UUID) -> None:
    await conn.execute("UPDATE screen_alerts SET state = 'alerted' WHERE screen_id = $1", screen_id)


async def open_incident_of(conn: Connection, venue_id: uuid.UUID) -> uuid.UUID | None:
    return await conn.fetchval(
        "SELECT id FROM venue_incidents WHERE venue_id = $1 AND closed_at IS NULL", venue_id
    )


async def paired_screens(conn: Connection, venue_id: uuid.UUID) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM screens WHERE venue_id = $1 AND state = 'active'", venue_id
    )


async def offline_near(
    conn: Connection, venue_id: uuid.UUID, offline_since: datetime, window: timedelta
) -> list[uuid.UUID]:
    """The venue's screens with an open alert that went offline within ``window`` of
    ``offline_since``, in the order they went offline."""
    found = await conn.fetch(
        "SELECT screen_id FROM screen_alerts WHERE venue_id = $1"
        " AND offline_since BETWEEN $2::timestamptz - $3::interval AND $2::timestamptz + $3::interval"
        " ORDER BY offline_since, screen_id",
        venue_id,
        offline_since,
        window,
    )
    return [row["screen_id"] for row in found]


async def insert_incident(
    conn: Connection, tenant_id: uuid.UUID, venue_id: uuid.UUID, screens_total: int
) -> uuid.UUID:
    return await conn.fetchval(
        "INSERT INTO venue_incidents (id, tenant_id, venue_id, screen_ids, screens_total)"
        " VALUES ($1, $2, $3, '{}', $4) RETURNING id",
        uuid.uuid4(),
        tenant_id,
        venue_id,
        screens_total,
    )


async def fold(conn: Connection, incident_id: uuid.UUID, screen_ids: list[uuid.UUID]) -> None:
    """Fold the screens' open alerts into the incident (they get no screen.offline of their own)."""
    await conn.execute(
        "UPDATE screen_alerts SET state = 'folded', incident_id = $1 WHERE screen_id = ANY($2::uuid[])",
        incident_id,
        screen_ids,
    )
    await conn.execute(
        "UPDATE venue_incidents SET screen_ids = ARRAY(SELECT DISTINCT unnest(screen_ids || $2::uuid[]))"
        " WHERE id = $1",
        incident_id,
        screen_ids,
    )
