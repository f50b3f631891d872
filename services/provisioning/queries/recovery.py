"""Factory-reset recovery: the device a hardware id and its recovery secret lead to."""

from __future__ import annotations

import uuid

from services.provisioning.models import Device
from services.provisioning.queries.devices import DEVICE_COLUMNS, device_of
from shared.db import Connection


async def lock_device_by_recovery_secret(
    conn: Connection, secret_hash: bytes, hardware_id: str
) -> Device | None:
    row = await conn.fetchrow(
        f"SELECT {DEVICE_COLUMNS} FROM devices WHERE recovery_secret_hash = $1 AND hardware_id = $2"
        " FOR UPDATE",
        secret_hash,
        hardware_id,
    )
    return device_of(row) if row else None


async def replace_recovery_secret(conn: Connection, device_id: uuid.UUID, secret_hash: bytes) -> None:
    await conn.execute("UPDATE devices SET recovery_secret_hash = $2 WHERE id = $1", device_id, secret_hash)
