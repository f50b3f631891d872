"""Devices as tenant admins see them: listed, read, locked for a revoke, or found by their own key
when a TV signs itself out."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import msgspec

from services.provisioning.models import Device, ReportedDeviceInfo
from shared.db import Connection
from shared.errors import NotFound
from shared.pagination import Cursor

DEVICE_COLUMNS = """id, tenant_id, screen_id, status, device_info, registered_at, revoked_at,
    revoke_reason"""


def device_of(row: asyncpg.Record | dict[str, Any]) -> Device:
    """A row of ``DEVICE_COLUMNS`` as a Device (its reported info is stored as JSON)."""
    values = dict(row)
    values["device_info"] = msgspec.convert(row["device_info"], ReportedDeviceInfo)
    return Device(**values)


async def get_device(conn: Connection, tenant_id: uuid.UUID, device_id: uuid.UUID) -> Device:
    row = await conn.fetchrow(
        f"SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1 AND tenant_id = $2", device_id, tenant_id
    )
    if row is None:
        raise NotFound("no such device")
    return device_of(row)


async def lock_device(conn: Connection, tenant_id: uuid.UUID, device_id: uuid.UUID) -> Device:
    row = await conn.fetchrow(
        f"SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
        device_id,
        tenant_id,
    )
    if row is None:
        raise NotFound("no such device")
    return device_of(row)


async def lock_device_by_key(conn: Connection, key_hash: bytes) -> tuple[Device, bool] | None:
    """The device of a key, locked, and whether the key still works."""
    row = await conn.fetchrow(
        f"SELECT {DEVICE_COLUMNS}, k.key_active FROM devices,"
        " LATERAL (SELECT revoked_at IS NULL AS key_active FROM device_keys"
        "   WHERE key_hash = $1 AND device_id = devices.id) k"
        " WHERE devices.id = (SELECT device_id FROM device_keys WHERE key_hash = $1) FOR UPDATE OF devices",
        key_hash,
    )
    if row is None:
        return None
    values = dict(row)
    key_active: bool = values.pop("key_active")
    return device_of(values), key_active


async def list_devices(
    conn: Connection,
    tenant_id: uuid.UUID,
    *,
    screen_id: uuid.UUID | None,
    status: str | None,
    after: Cursor | None,
    limit: int,
) -> list[Device]:
    rows = await conn.fetch(
        f"SELECT {DEVICE_COLUMNS} FROM devices WHERE tenant_id = $1"
        " AND ($2::uuid IS NULL OR screen_id = $2) AND ($3::text IS NULL OR status = $3)"
        " AND ($4::timestamptz IS NULL OR (registered_at, id) > ($4, $5))"
        " ORDER BY registered_at, id LIMIT $6",
        tenant_id,
        screen_id,
        status,
        after.created_at if after else None,
        after.id if after else None,
        limit,
    )
    return [device_of(row) for row in rows]
