"""Device authorizations (RFC 8628): a TV's request to be paired, found by the user code it shows
(the admin's side) or by the hash of its device code (the TV's polls)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg
import msgspec

from services.provisioning.models import DeviceAuthorization, ReportedDeviceInfo
from services.provisioning.queries.screens import ScreenCopy, lock_screen_of
from shared.db import Connection

# A pending or approved request past its expiry reads as expired (the stored status stays).
_AUTHORIZATION_COLUMNS = """user_code,
    CASE WHEN status IN ('pending', 'approved') AND expires_at <= now() THEN 'expired'
    ELSE status END AS status, device_info, requested_from, created_at, expires_at, screen_id"""


class Poll(msgspec.Struct, frozen=True):
    """What a poll decides on: status, expiry, the pacing, who approved, what the TV reported."""

    status: str
    client_id: str
    expired: bool
    too_soon: bool
    screen_id: uuid.UUID | None
    decided_by: str | None
    device_info: ReportedDeviceInfo
    requested_from: str | None


async def insert_authorization(
    conn: Connection,
    *,
    device_code_hash: bytes,
    new_user_code: Callable[[], str],
    client_id: str,
    device_info: ReportedDeviceInfo,
    requested_from: str,
    ttl_seconds: int,
    interval_seconds: int,
) -> str:
    """A pending authorization; returns its user code (drawn again on the rare collision)."""
    while True:
        user_code = new_user_code()
        inserted: str | None = await conn.fetchval(
            "INSERT INTO device_authorizations (device_code_hash, user_code, client_id, device_info,"
            " requested_from, expires_at, interval_seconds, status)"
            " VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7, 'pending')"
            " ON CONFLICT (user_code) DO NOTHING RETURNING user_code",
            device_code_hash,
            user_code,
            client_id,
            msgspec.to_builtins(device_info),
            requested_from,
            ttl_seconds,
            interval_seconds,
        )
        if inserted is not None:
            return inserted


def _authorization(row: asyncpg.Record) -> DeviceAuthorization:
    values = {name: row[name] for name in DeviceAuthorization.__struct_fields__}
    values["device_info"] = msgspec.convert(row["device_info"], ReportedDeviceInfo)
    return DeviceAuthorization(**values)


async def find_authorization(
    conn: Connection, user_code: str, tenant_id: uuid.UUID, *, lock: bool = False
) -> tuple[DeviceAuthorization, bool] | None:
    """A pending authorization, or one this tenant decided, and whether it expired (whatever its
    status). Another tenant's decision is not found (never 403 across tenants)."""
    row = await conn.fetchrow(
        f"SELECT {_AUTHORIZATION_COLUMNS}, expires_at <= now() AS expired FROM device_authorizations"
        " WHERE user_code = $1 AND (tenant_id IS NULL OR tenant_id = $2)" + (" FOR UPDATE" if lock else ""),
        user_code,
        tenant_id,
    )
    if row is None:
        return None
    expired: bool = row["expired"]
    return _authorization(row), expired


async def decide_authorization(
    conn: Connection,
    user_code: str,
    *,
    status: str,
    tenant_id: uuid.UUID,
    screen_id: uuid.UUID | None,
    decided_by: str,
) -> DeviceAuthorization:
    row = await conn.fetchrow(
        "UPDATE device_authorizations SET status = $2, tenant_id = $3, screen_id = $4, decided_by = $5,"
        f" decided_at = now() WHERE user_code = $1 RETURNING {_AUTHORIZATION_COLUMNS}",
        user_code,
        status,
        tenant_id,
        screen_id,
        decided_by,
    )
    assert row is not None  # the caller found and locked it
    return _authorization(row)


async def lock_authorization_screen(conn: Connection, device_code_hash: bytes) -> ScreenCopy | None:
    """None while the authorization is not approved (it names no screen yet)."""
    return await lock_screen_of(
        conn, "SELECT screen_id FROM device_authorizations WHERE device_code_hash = $1", device_code_hash
    )


async def lock_poll(conn: Connection, device_code_hash: bytes) -> Poll | None:
    """The authorization a TV polls for, locked."""
    row = await conn.fetchrow(
        "SELECT status, client_id, expires_at <= now() AS expired,"
        " last_polled_at IS NOT NULL AND last_polled_at > now() - make_interval(secs => interval_seconds)"
        "  AS too_soon, screen_id, decided_by, device_info, requested_from"
        " FROM device_authorizations WHERE device_code_hash = $1 FOR UPDATE",
        device_code_hash,
    )
    return msgspec.convert(dict(row), Poll) if row else None


async def record_poll(conn: Connection, device_code_hash: bytes, *, slow_down: bool) -> int:
    """Note the poll; ``slow_down`` adds 5 s to the interval for good (RFC 8628 §3.5). Returns it."""
    interval: int = await conn.fetchval(
        "UPDATE device_authorizations SET last_polled_at = now(),"
        " interval_seconds = interval_seconds + CASE WHEN $2 THEN 5 ELSE 0 END"
        " WHERE device_code_hash = $1 RETURNING interval_seconds",
        device_code_hash,
        slow_down,
    )
    return interval


async def mark_authorization_delivered(
    conn: Connection, device_code_hash: bytes, device_id: uuid.UUID
) -> None:
    await conn.execute(
        "UPDATE device_authorizations SET status = 'delivered', device_id = $2 WHERE device_code_hash = $1",
        device_code_hash,
        device_id,
    )
