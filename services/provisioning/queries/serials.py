"""Serial numbers registered ahead: assigned to a tenant by the operator, mapped by that tenant to
its screens, enabled for a window, activated once by the device that carries them."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from services.provisioning.models import Serial, SerialStatus
from services.provisioning.queries.screens import ScreenCopy, lock_screen_of
from shared.db import Connection

_SERIAL_COLUMNS = """serial, screen_id, CASE WHEN activated_at IS NOT NULL THEN 'activated'
    WHEN screen_id IS NULL THEN 'assigned' WHEN enabled_until IS NULL THEN 'registered'
    WHEN enabled_until <= now() THEN 'expired' ELSE 'enabled' END AS status, created_at,
    enabled_until, activated_at, device_id"""


class SerialOwner(msgspec.Struct, frozen=True):
    """Which tenant a stored serial is assigned to, and whether a device activated it already."""

    serial: str
    tenant_id: uuid.UUID
    activated: bool


class MappedSerial(msgspec.Struct, frozen=True):
    """A serial of the tenant's, as a mapping finds it: its screen (None while only assigned)."""

    serial: str
    screen_id: uuid.UUID | None
    activated: bool


class LockedSerial(msgspec.Struct, frozen=True):
    """A serial as a device presents it: its state, and the tenant its alerts go to."""

    serial: str
    tenant_id: uuid.UUID
    screen_id: uuid.UUID | None
    status: SerialStatus
    created_at: datetime
    enabled_until: datetime | None
    activated_at: datetime | None
    device_id: uuid.UUID | None


async def assign_serials(
    conn: Connection, rows: list[tuple[str, uuid.UUID]], *, move: bool
) -> tuple[int, int]:
    """Assign serials to tenants; returns (assigned, moved). A serial of another tenant moves only
    with ``move`` and only if no device activated it; moving forgets its screen and window (they
    were the other tenant's). A serial this statement leaves alone is either assigned to its
    tenant already or refused: ``assigned_elsewhere`` tells which. The conflicting rows stay
    locked to the end of the transaction."""
    rows = sorted(rows)  # one lock order for concurrent batches
    result = await conn.fetch(
        "INSERT INTO serials (serial, tenant_id)"
        " SELECT serial, tenant_id FROM unnest($1::text[], $2::uuid[]) AS r (serial, tenant_id)"
        " ON CONFLICT (serial) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, screen_id = NULL,"
        "  enabled_until = NULL, created_at = now()"
        " WHERE $3 AND serials.tenant_id <> EXCLUDED.tenant_id AND serials.activated_at IS NULL"
        " RETURNING (xmax = 0) AS created",
        [serial for serial, _ in rows],
        [tenant_id for _, tenant_id in rows],
        move,
    )
    assigned = sum(1 for row in result if row["created"])
    return assigned, len(result) - assigned


async def assigned_elsewhere(conn: Connection, rows: list[tuple[str, uuid.UUID]]) -> list[SerialOwner]:
    """The serials of ``rows`` that are assigned to another tenant than the one they name."""
    found = await conn.fetch(
        "SELECT s.serial, s.tenant_id, s.activated_at IS NOT NULL AS activated"
        " FROM serials s JOIN unnest($1::text[], $2::uuid[]) AS r (serial, tenant_id) USING (serial)"
        " WHERE s.tenant_id <> r.tenant_id ORDER BY s.serial",
        [serial for serial, _ in rows],
        [tenant_id for _, tenant_id in rows],
    )
    return [SerialOwner(**row) for row in found]


async def lock_tenant_serials(
    conn: Connection, tenant_id: uuid.UUID, serials: list[str]
) -> list[MappedSerial]:
    """The serials of the list that are assigned to the tenant, locked; others are not there."""
    rows = await conn.fetch(
        "SELECT serial, screen_id, activated_at IS NOT NULL AS activated FROM serials"
        # COLLATE "C": byte order, the order assign_serials sorts in (Python's), whatever the
        # database's collation; two orders would let a move and an upload deadlock.
        ' WHERE serial = ANY($2) AND tenant_id = $1 ORDER BY serial COLLATE "C" FOR UPDATE',
        tenant_id,
        serials,
    )
    return [MappedSerial(**row) for row in rows]


async def map_serials(conn: Connection, tenant_id: uuid.UUID, rows: list[tuple[str, uuid.UUID]]) -> int:
    """Point the tenant's serials at its screens; returns how many changed. The tenant condition is
    in the statement, and there is no insert: a serial assigned to another tenant (even one that
    moved a moment ago) is never touched, whatever ran before."""
    changed: int = await conn.fetchval(
        "WITH changed AS (UPDATE serials SET screen_id = r.screen_id"
        "  FROM unnest($2::text[], $3::uuid[]) AS r (serial, screen_id)"
        "  WHERE serials.serial = r.serial AND serials.tenant_id = $1 AND serials.activated_at IS NULL"
        "   AND serials.screen_id IS DISTINCT FROM r.screen_id RETURNING 1)"
        " SELECT count(*) FROM changed",
        tenant_id,
        [serial for serial, _ in rows],
        [screen_id for _, screen_id in rows],
    )
    return changed


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
    """Open (or reopen) the activation window of a mapped serial not activated yet."""
    row = await conn.fetchrow(
        "UPDATE serials SET enabled_until = now() + make_interval(mins => $3)"
        " WHERE serial = $1 AND tenant_id = $2 AND screen_id IS NOT NULL AND activated_at IS NULL"
        f" RETURNING {_SERIAL_COLUMNS}",
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
