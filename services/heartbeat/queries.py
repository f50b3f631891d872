"""All of the heartbeat service's SQL. Functions take a connection; the caller owns the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

from services.heartbeat.models import FleetStatus, ScreenPresence
from shared.db import Connection
from shared.events import Heartbeat, PresenceChanged, ScreenConfigChanged, ScreenCreated


class Transition(msgspec.Struct, frozen=True):
    screen_id: uuid.UUID
    tenant_id: uuid.UUID
    presence: Literal["online", "offline"]
    last_seen_at: datetime
    presence_seq: int

    def event(self) -> PresenceChanged:
        return PresenceChanged(
            tenant_id=self.tenant_id,
            screen_id=self.screen_id,
            presence=self.presence,
            last_seen_at=self.last_seen_at,
            presence_seq=self.presence_seq,
        )


# ---- the copy of registry's screens -----------------------------------------------------------


async def upsert_screen(
    conn: Connection, event: ScreenCreated | ScreenConfigChanged, offline_after_intervals: float
) -> bool:
    """Apply a screen event (older versions change nothing); a new heartbeat interval moves the
    screen's offline deadline at once."""
    status = await conn.execute(
        "INSERT INTO screens (id, tenant_id, version, heartbeat_interval_minutes) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version,"
        " heartbeat_interval_minutes = EXCLUDED.heartbeat_interval_minutes"
        " WHERE screens.version < EXCLUDED.version",
        event.screen_id,
        event.tenant_id,
        event.version,
        event.config.heartbeat_interval_minutes,
    )
    applied = status.endswith(" 1")
    if applied:
        await conn.execute(
            "UPDATE presence SET offline_after = last_seen_at + make_interval(secs => $2::float8 * 60 * $3)"
            " WHERE screen_id = $1",
            event.screen_id,
            offline_after_intervals,
            event.config.heartbeat_interval_minutes,
        )
    return applied


# ---- heartbeats and presence ------------------------------------------------------------------


async def record_heartbeats(
    conn: Connection, heartbeats: list[Heartbeat], offline_after_intervals: float
) -> list[Transition]:
    """Keep the newest heartbeat of each screen and return the screens whose presence changed.

    Older heartbeats than the stored one change nothing, so a redelivered batch is harmless; a
    heartbeat already past its screen's offline deadline (a late redelivery) does not make the
    screen online. Call inside a transaction: the rows stay locked until the transitions are in
    the outbox.
    """
    newest: dict[uuid.UUID, Heartbeat] = {}
    for heartbeat in heartbeats:
        current = newest.get(heartbeat.screen_id)
        if current is None or current.received_at < heartbeat.received_at:
            newest[heartbeat.screen_id] = heartbeat
    rows = list(newest.values())
    screen_ids = [h.screen_id for h in rows]
    before = {
        row["screen_id"]: row["status"]
        for row in await conn.fetch(
            "SELECT screen_id, status FROM presence WHERE screen_id = ANY($1::uuid[])"
            " ORDER BY screen_id FOR UPDATE",
            screen_ids,
        )
    }
    after = await conn.fetch(
        "WITH batch AS ("
        "  SELECT b.*,"
        "    b.seen_at + make_interval(secs => $6::float8 * 60 * coalesce(s.heartbeat_interval_minutes, 1))"
        "    AS offline_after"
        "  FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::jsonb[])"
        "    AS b(screen_id, tenant_id, device_id, seen_at, report)"
        "  LEFT JOIN screens s ON s.id = b.screen_id"
        ")"
        " INSERT INTO presence AS p (screen_id, tenant_id, device_id, last_seen_at, last_heartbeat, status,"
        "   offline_after, presence_seq)"
        " SELECT screen_id, tenant_id, device_id, seen_at, report,"
        "   CASE WHEN offline_after > now() THEN 'online' ELSE 'offline' END, offline_after, 1"
        " FROM batch"
        " ON CONFLICT (screen_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id,"
        "   device_id = EXCLUDED.device_id, last_seen_at = EXCLUDED.last_seen_at,"
        "   last_heartbeat = EXCLUDED.last_heartbeat, offline_after = EXCLUDED.offline_after,"
        "   status = CASE WHEN EXCLUDED.offline_after > now() THEN 'online' ELSE p.status END,"
        "   presence_seq = p.presence_seq"
        "     + (p.status <> CASE WHEN EXCLUDED.offline_after > now() THEN 'online' ELSE p.status END)::int"
        " WHERE p.last_seen_at < EXCLUDED.last_seen_at"
        " RETURNING screen_id, tenant_id, status, last_seen_at, presence_seq",
        screen_ids,
        [h.tenant_id for h in rows],
        [h.device_id for h in rows],
        [h.received_at for h in rows],
        [msgspec.to_builtins(h) for h in rows],
        offline_after_intervals,
    )
    return [
        Transition(
            row["screen_id"], row["tenant_id"], row["status"], row["last_seen_at"], row["presence_seq"]
        )
        for row in after
        if before.get(row["screen_id"]) != row["status"]
    ]


async def store_heartbeats(conn: Connection, heartbeats: list[Heartbeat]) -> None:
    """Add the batch to the history; one already stored (a redelivery) is skipped."""
    await conn.execute(
        "INSERT INTO heartbeats (screen_id, received_at, tenant_id, report)"
        " SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::jsonb[])"
        " ON CONFLICT DO NOTHING",
        [h.screen_id for h in heartbeats],
        [h.received_at for h in heartbeats],
        [h.tenant_id for h in heartbeats],
        [msgspec.to_builtins(h) for h in heartbeats],
    )


async def prune_heartbeats(conn: Connection, older_than_hours: float, limit: int) -> int:
    """Delete at most ``limit`` heartbeats older than the retention; returns how many went."""
    status = await conn.execute(
        "DELETE FROM heartbeats WHERE ctid = ANY (ARRAY(SELECT ctid FROM heartbeats"
        " WHERE received_at < now() - make_interval(secs => $1::float8 * 3600) LIMIT $2))",
        older_than_hours,
        limit,
    )
    return int(status.split()[-1])


async def heartbeat_history(
    conn: Connection, screen_id: uuid.UUID, *, since: datetime | None, limit: int
) -> list[Heartbeat]:
    """The screen's heartbeats after ``since``, oldest first."""
    rows = await conn.fetch(
        "SELECT report FROM heartbeats WHERE screen_id = $1 AND ($2::timestamptz IS NULL OR received_at > $2)"
        " ORDER BY received_at LIMIT $3",
        screen_id,
        since,
        limit,
    )
    return [msgspec.convert(row["report"], Heartbeat) for row in rows]


async def tenant_has_screen(conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> bool:
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM screens WHERE id = $1 AND tenant_id = $2)", screen_id, tenant_id
    )


async def mark_overdue_offline(conn: Connection, limit: int) -> list[Transition]:
    """Screens online past their deadline go offline, at most ``limit`` of them. Rows another
    replica is handling are skipped, and the status is checked again under the row lock, so two
    replicas never both announce one transition."""
    rows = await conn.fetch(
        "UPDATE presence SET status = 'offline', presence_seq = presence_seq + 1"
        " WHERE screen_id IN (SELECT screen_id FROM presence"
        "   WHERE status = 'online' AND offline_after <= now()"
        "   ORDER BY offline_after LIMIT $1 FOR UPDATE SKIP LOCKED)"
        " AND status = 'online'"
        " RETURNING screen_id, tenant_id, last_seen_at, presence_seq",
        limit,
    )
    return [
        Transition(row["screen_id"], row["tenant_id"], "offline", row["last_seen_at"], row["presence_seq"])
        for row in rows
    ]


# ---- what admins read -------------------------------------------------------------------------


async def fleet_status(conn: Connection, tenant_id: uuid.UUID) -> FleetStatus:
    row = await conn.fetchrow(
        "SELECT count(*) AS screens,"
        " count(*) FILTER (WHERE p.status = 'online') AS online,"
        " count(*) FILTER (WHERE p.status = 'offline') AS offline"
        " FROM screens s LEFT JOIN presence p ON p.screen_id = s.id WHERE s.tenant_id = $1",
        tenant_id,
    )
    assert row is not None  # an aggregate without GROUP BY: always one row
    return FleetStatus(
        screens=row["screens"],
        online=row["online"],
        offline=row["offline"],
        unknown=row["screens"] - row["online"] - row["offline"],
    )


async def screen_presence(
    conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID
) -> ScreenPresence | None:
    """None when the screen is not the tenant's (or not heard of yet)."""
    row = await conn.fetchrow(
        "SELECT s.id, p.status, p.last_seen_at, p.last_heartbeat FROM screens s"
        " LEFT JOIN presence p ON p.screen_id = s.id WHERE s.id = $1 AND s.tenant_id = $2",
        screen_id,
        tenant_id,
    )
    if row is None:
        return None
    return ScreenPresence(
        screen_id=row["id"],
        presence=row["status"] or "unknown",
        last_seen_at=row["last_seen_at"],
        last_heartbeat=msgspec.convert(row["last_heartbeat"], Heartbeat) if row["last_heartbeat"] else None,
    )
