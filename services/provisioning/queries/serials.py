"""Serial numbers registered ahead: uploaded by a tenant for its screens, enabled for a window,
activated once by the device that carries them."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from services.provisioning.models import Serial, SerialStatus
from services.provisioning.queries.screens import ScreenCopy, lock_screen_of
from shared.db import Connection

_SERIAL_COLUMNS = """serial, screen_id, CASE WHEN activated_at IS NOT NULL THEN 'activated'
    WHEN enabled_until IS NULL THEN 'registered' WHEN enabled_until <= now() THEN 'expired'
    ELSE 'enabled' END AS status, created_at, enabled_until, activated_at, device_id"""


class SerialOwner(msgspec.Struct, frozen=True):
    """Whose a stored serial is, and whether a device activated it already."""

    serial: str
    tenant_id: uuid.UUID
    screen_id: uuid.UUID
    activated: bool


class LockedSerial(msgspec.Struct, frozen=True):
    """A serial as a device presents it: its state, and the tenant its alerts go to."""

    serial: str
    tenant_id: uuid.UUID
    screen_id: uuid.UUID
    status: SerialStatus
    created_at: datetime
    enabled_until: datetime | None
    activated_at: datetime | None
    device_id: uuid.UUID | None


async def lock_serials(conn: Connection, serials: list[str]) -> list[SerialOwner]:
    rows = await conn.fetch(
        "SELECT serial, tenant_id, screen_id, activated_at IS NOT NULL AS activated FROM serials"
        " WHERE serial = ANY($1) ORDER BY serial FOR UPDATE",
        serials,
    )
    return [SerialOwner(**row) for row in rows]


async def upsert_serials(
    conn: Connection, tenant_id: uuid.UUID, rows: list[tuple[str, uuid.UUID]]
) -> tuple[int, int]:
    """Insert new serials, move known ones to their new screen; returns (created, updated)."""
    result = await conn.fetch(
        "INSERT INTO serials (serial, tenant_id, screen_id)"
        " SELECT serial, $1, screen_id FROM unnest($2::text[], $3::uuid[]) AS r (serial, screen_id)"
        " ON CONFLICT (serial) DO UPDATE SET screen_id = EXCLUDED.screen_id"
        " WHERE serials.screen_id <> EXCLUDED.screen_id"
        " RETURNING (xmax = 0) AS created",
        tenant_id,
        [serial for serial, _ in rows],
        [screen_id for _, screen_id in rows],
    )
    created = sum(1 for row in result if row["created"])
    return created, len(result) - created


async def list_serials(
    conn: Connection, tenant_id: uuid.UUID, *, status: str | None, after: str | None, limit: int
) -> list[Serial]:
    """In serial order, after the serial ``after``."""
    rows = await conn.fetch(
        f"SELECT * FROM (SELECT {_SERIAL_COLUMNS} FROM serials WHERE tenant_id = $1"
        "  AND ($3::text IS NULL OR serial > $3)) s"
        " WHERE ($2::text IS NULL OR status = $2) ORDER BY serial LIMIT $4",
        tenant_id,
        status,
        after,
        limit,
    )
    return [Serial(**row) for row in rows]


async def enable_serial(conn: Connection, tenant_id: uuid.UUID, serial: str, minutes: int) -> Serial | None:
    """Open (or reopen) the activation window of a serial not activated yet."""
    row = await conn.fetchrow(
        "UPDATE serials SET enabled_until = now() + make_interval(mins => $3)"
        f" WHERE serial = $1 AND tenant_id = $2 AND activated_at IS NULL RETURNING {_SERIAL_COLUMNS}",
        serial,
        tenant_id,
        minutes,
    )
    return Serial(**row) if row else None


async def get_serial(conn: Connection, tenant_id: uuid.UUID, serial: str) -> Serial | None:
    row = await conn.fetchrow(
        f"SELECT {_SERIAL_COLUMNS} FROM serials WHERE serial = $1 AND tenant_id = $2", serial, tenant_id
    )
    return Serial(**row) if row else None


async def lock_serial_screen(conn: Connection, serial: str) -> ScreenCopy | None:
    return await lock_screen_of(conn, "SELECT screen_id FROM serials WHERE serial = $1", serial)


async def lock_serial(conn: Connection, serial: str) -> LockedSerial | None:
    row = await conn.fetchrow(
        f"SELECT {_SERIAL_COLUMNS}, tenant_id FROM serials WHERE serial = $1 FOR UPDATE", serial
    )
    return LockedSerial(**row) if row else None


async def mark_serial_activated(conn: Connection, serial: str, device_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE serials SET activated_at = now(), device_id = $2 WHERE serial = $1", serial, device_id
    )
