"""Screens: created, read and listed by admins; their binding state and presence applied from
what provisioning and the heartbeat service report."""

from __future__ import annotations

import uuid

from services.registry.models import NewScreen, Screen
from services.registry.queries import rows
from shared.db import Connection
from shared.events import DeviceBound, DeviceRevoked, PresenceChanged
from shared.pagination import Cursor

_SCREEN_COLUMNS = """id, tenant_id, venue_id, name, orientation, resolution, state, device_id,
    presence, last_seen_at, offline_alert_after_minutes, created_at, updated_at"""


async def insert_screen(conn: Connection, tenant_id: uuid.UUID, screen: NewScreen) -> Screen:
    row = await conn.fetchrow(
        "INSERT INTO screens (id, tenant_id, venue_id, name, orientation, resolution,"
        f" offline_alert_after_minutes) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_SCREEN_COLUMNS}",
        uuid.uuid4(),
        tenant_id,
        screen.venue_id,
        screen.name,
        screen.orientation,
        screen.resolution,
        screen.offline_alert_after_minutes,
    )
    assert row is not None  # an INSERT … RETURNING: always its row
    return Screen(**row)


async def get_screen(
    conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID, *, lock: bool = False
) -> Screen:
    """The screen; with ``lock``, its row stays locked until the transaction ends."""
    row = await conn.fetchrow(
        f"SELECT {_SCREEN_COLUMNS} FROM screens WHERE id = $1 AND tenant_id = $2"
        + (" FOR UPDATE" if lock else ""),
        screen_id,
        tenant_id,
    )
    return Screen(**rows.found(row, "no such screen"))


async def update_screen(conn: Connection, screen: Screen) -> Screen:
    """Store the changeable fields of ``screen`` (locked by the caller)."""
    row = await conn.fetchrow(
        "UPDATE screens SET name = $2, offline_alert_after_minutes = $3, updated_at = now()"
        f" WHERE id = $1 RETURNING {_SCREEN_COLUMNS}",
        screen.id,
        screen.name,
        screen.offline_alert_after_minutes,
    )
    assert row is not None  # locked since it was read
    return Screen(**row)


async def list_screens(
    conn: Connection,
    tenant_id: uuid.UUID,
    *,
    venue_id: uuid.UUID | None,
    state: str | None,
    after: Cursor | None,
    limit: int,
) -> list[Screen]:
    found = await conn.fetch(
        f"SELECT {_SCREEN_COLUMNS} FROM screens WHERE tenant_id = $1"
        " AND ($2::uuid IS NULL OR venue_id = $2) AND ($3::text IS NULL OR state = $3)"
        " AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5))"
        " ORDER BY created_at, id LIMIT $6",
        tenant_id,
        venue_id,
        state,
        after.created_at if after else None,
        after.id if after else None,
        limit,
    )
    return [Screen(**row) for row in found]


async def screens_of_tenant(
    conn: Connection, tenant_id: uuid.UUID, screen_ids: tuple[uuid.UUID, ...]
) -> bool:
    """Whether every one of ``screen_ids`` is a screen of the tenant."""
    return await conn.fetchval(
        "SELECT count(*) = cardinality($2::uuid[]) FROM screens WHERE tenant_id = $1 AND id = ANY($2)",
        tenant_id,
        list(screen_ids),
    )


# ---- binding, as provisioning reports it ------------------------------------------------------


async def apply_device_bound(conn: Connection, event: DeviceBound) -> bool:
    """Mark the screen active; a no-op for an event older than what was applied (or repeated)."""
    status = await conn.execute(
        "UPDATE screens SET state = 'active', device_id = $2, binding_seq = $3, updated_at = now()"
        " WHERE id = $1 AND binding_seq < $3",
        event.screen_id,
        event.device_id,
        event.binding_seq,
    )
    return rows.applied(status)


async def apply_device_revoked(conn: Connection, event: DeviceRevoked) -> bool:
    status = await conn.execute(
        "UPDATE screens SET state = 'provisioning', device_id = NULL, binding_seq = $2, updated_at = now()"
        " WHERE id = $1 AND binding_seq < $2",
        event.screen_id,
        event.binding_seq,
    )
    return rows.applied(status)


# ---- presence, as the heartbeat service reports it ----------------------------------------------


async def apply_presence_changed(conn: Connection, event: PresenceChanged) -> bool:
    """Record an online/offline transition; a no-op for one older than what was applied."""
    status = await conn.execute(
        "UPDATE screens SET presence = $2, last_seen_at = $3, presence_seq = $4"
        " WHERE id = $1 AND presence_seq < $4",
        event.screen_id,
        event.presence,
        event.last_seen_at,
        event.presence_seq,
    )
    return rows.applied(status)
