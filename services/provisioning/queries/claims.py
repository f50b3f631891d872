"""Pre-provisioned (factory) devices: made ahead by the operator, put in claim mode by the device
itself, claimed onto a screen by a tenant admin with the code the device shows."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import msgspec

from services.provisioning.models import DeviceInfo
from shared.db import Connection


class FactoryDeviceState(msgspec.Struct, frozen=True):
    id: uuid.UUID
    claimed: bool


class ClaimableDevice(msgspec.Struct, frozen=True):
    """A device in claim mode: what it was flashed with and what it reported when it opened it."""

    id: uuid.UUID
    key_hash: bytes
    device_info: DeviceInfo
    claim_requested_from: str | None
    claimed: bool


async def insert_factory_devices(conn: Connection, devices: list[tuple[uuid.UUID, bytes]]) -> None:
    await conn.executemany("INSERT INTO factory_devices (id, key_hash) VALUES ($1, $2)", devices)


async def lock_factory_device_by_key(conn: Connection, key_hash: bytes) -> FactoryDeviceState | None:
    row = await conn.fetchrow(
        "SELECT id, claimed_at IS NOT NULL AS claimed FROM factory_devices WHERE key_hash = $1 FOR UPDATE",
        key_hash,
    )
    return FactoryDeviceState(**row) if row else None


async def open_claim_mode(
    conn: Connection,
    device_id: uuid.UUID,
    *,
    code_hash: bytes,
    seconds: int,
    device_info: DeviceInfo,
    requested_from: str,
) -> datetime | None:
    """Until when the device is claimable; None when the code collides with another device's
    (draw again)."""
    try:
        async with conn.transaction():
            expires_at: datetime = await conn.fetchval(
                "UPDATE factory_devices SET claim_code_hash = $2,"
                " claim_expires_at = now() + make_interval(secs => $3), device_info = $4,"
                " claim_requested_from = $5 WHERE id = $1 RETURNING claim_expires_at",
                device_id,
                code_hash,
                seconds,
                msgspec.to_builtins(device_info),
                requested_from,
            )
            return expires_at
    except asyncpg.UniqueViolationError:
        return None


async def lock_factory_device_by_claim(conn: Connection, code_hash: bytes) -> ClaimableDevice | None:
    """A device in claim mode with this code, locked: its single claim is decided under this lock."""
    row = await conn.fetchrow(
        "SELECT id, key_hash, device_info, claim_requested_from, claimed_at IS NOT NULL AS claimed"
        " FROM factory_devices WHERE claim_code_hash = $1 AND claim_expires_at > now() FOR UPDATE",
        code_hash,
    )
    return msgspec.convert(dict(row), ClaimableDevice) if row else None


async def mark_claimed(conn: Connection, device_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE factory_devices SET claimed_at = now(), claim_code_hash = NULL WHERE id = $1", device_id
    )
