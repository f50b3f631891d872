"""What binding and unbinding write: the device row, its keys, the code it used, the audit row and
the screen's binding sequence (which orders binds and unbinds of one screen for registry)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import msgspec

from services.provisioning.models import Device, ReportedDeviceInfo
from services.provisioning.queries.devices import DEVICE_COLUMNS, device_of
from shared.db import Connection
from shared.errors import Conflict


async def bind_device(
    conn: Connection,
    device_id: uuid.UUID,
    *,
    tenant_id: uuid.UUID,
    screen_id: uuid.UUID,
    key_hash: bytes,
    device_info: ReportedDeviceInfo,
    recovery_secret_hash: bytes | None,
    method: str,
    actor: str,
    client_address: str | None,
    code: str | None = None,
) -> tuple[Device, int]:
    """The device ``device_id`` active on the screen with this key: a new row, or — a suspended
    device of this hardware paired again — its row active again. With its key, its audit row, the
    code (if any) marked bound and the screen's next binding sequence, in one statement (one round
    trip instead of five)."""
    try:
        row = await conn.fetchrow(
            "WITH device AS ("
            "  INSERT INTO devices (id, tenant_id, screen_id, status, device_info, registered_from,"
            "   hardware_id, recovery_secret_hash)"
            "  VALUES ($1, $2, $3, 'active', $4, $5, $8, $9)"
            "  ON CONFLICT (id) DO UPDATE SET status = 'active', device_info = EXCLUDED.device_info,"
            "   registered_from = EXCLUDED.registered_from, registered_at = now(), revoked_at = NULL,"
            "   revoke_reason = NULL, recovery_secret_hash = EXCLUDED.recovery_secret_hash"
            # Only the screen's own suspended device comes back; any other holder of the id is a
            # conflict, never taken over.
            "  WHERE devices.status = 'suspended' AND devices.tenant_id = EXCLUDED.tenant_id"
            "   AND devices.screen_id = EXCLUDED.screen_id"
            f"  RETURNING {DEVICE_COLUMNS}"
            "), key AS (INSERT INTO device_keys (key_hash, device_id) VALUES ($6, $1)"
            "), code AS ("
            "  UPDATE provisioning_codes SET status = 'bound', bound_at = now(), device_id = $1"
            "  WHERE code = $7"
            "), audit AS ("
            "  INSERT INTO binding_audit (tenant_id, device_id, screen_id, action, method, actor,"
            "   client_address) SELECT tenant_id, id, screen_id, 'bound', $10, $11, $5 FROM device"
            "), seq AS (UPDATE screens SET binding_seq = binding_seq + 1 WHERE id = $3 RETURNING binding_seq)"
            " SELECT device.*, seq.binding_seq FROM device, seq",
            device_id,
            tenant_id,
            screen_id,
            msgspec.to_builtins(device_info),
            client_address,
            key_hash,
            code,
            device_info.hardware_id,
            recovery_secret_hash,
            method,
            actor,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("the screen already has an active device") from None
    if row is None:  # the id is another device's (the caller's transaction rolls all of it back)
        raise Conflict("a device with this id exists already")
    values = dict(row)
    binding_seq: int = values.pop("binding_seq")
    return device_of(values), binding_seq


async def recoverable_device(
    conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID, hardware_id: str
) -> uuid.UUID | None:
    """The suspended device of this hardware that was last bound to this screen, if any."""
    device_id: uuid.UUID | None = await conn.fetchval(
        "SELECT id FROM devices WHERE tenant_id = $1 AND screen_id = $2 AND hardware_id = $3"
        " AND status = 'suspended' ORDER BY registered_at DESC LIMIT 1",
        tenant_id,
        screen_id,
        hardware_id,
    )
    return device_id


async def add_key(conn: Connection, device_id: uuid.UUID, key_hash: bytes) -> None:
    await conn.execute("INSERT INTO device_keys (key_hash, device_id) VALUES ($1, $2)", key_hash, device_id)


async def revoke_keys(conn: Connection, device_id: uuid.UUID) -> list[bytes]:
    """Revoke the device's active keys; returns their hashes."""
    rows = await conn.fetch(
        "UPDATE device_keys SET revoked_at = now() WHERE device_id = $1 AND revoked_at IS NULL"
        " RETURNING key_hash",
        device_id,
    )
    return [row["key_hash"] for row in rows]


async def suspend_device(conn: Connection, device_id: uuid.UUID, reason: str | None) -> datetime:
    """Suspend the device and revoke its codes; returns when."""
    revoked_at: datetime = await conn.fetchval(
        "UPDATE devices SET status = 'suspended', revoked_at = now(), revoke_reason = $2"
        " WHERE id = $1 RETURNING revoked_at",
        device_id,
        reason,
    )
    await conn.execute(
        "UPDATE provisioning_codes SET status = 'revoked' WHERE device_id = $1 AND status = 'bound'",
        device_id,
    )
    return revoked_at


async def next_binding_seq(conn: Connection, screen_id: uuid.UUID) -> int:
    seq: int = await conn.fetchval(
        "UPDATE screens SET binding_seq = binding_seq + 1 WHERE id = $1 RETURNING binding_seq", screen_id
    )
    return seq
