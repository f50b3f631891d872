"""All of the heartbeat service's SQL. Functions take a connection; the caller owns the transaction."""

from __future__ import annotations

import asyncpg
import msgspec

from shared.events import Heartbeat


async def record_heartbeats(conn: asyncpg.Connection, heartbeats: list[Heartbeat]) -> None:
    """Upsert the newest heartbeat of each screen in one statement; older ones change nothing,
    so a redelivered batch is harmless."""
    newest: dict = {}
    for heartbeat in heartbeats:
        current = newest.get(heartbeat.screen_id)
        if current is None or current.received_at < heartbeat.received_at:
            newest[heartbeat.screen_id] = heartbeat
    rows = list(newest.values())
    await conn.execute(
        "INSERT INTO presence (screen_id, tenant_id, device_id, last_seen_at, last_heartbeat)"
        " SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::jsonb[])"
        " ON CONFLICT (screen_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id,"
        " device_id = EXCLUDED.device_id, last_seen_at = EXCLUDED.last_seen_at,"
        " last_heartbeat = EXCLUDED.last_heartbeat"
        " WHERE presence.last_seen_at < EXCLUDED.last_seen_at",
        [h.screen_id for h in rows],
        [h.tenant_id for h in rows],
        [h.device_id for h in rows],
        [h.received_at for h in rows],
        [msgspec.to_builtins(h) for h in rows],
    )
