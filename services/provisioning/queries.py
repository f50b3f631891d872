"""All of provisioning's SQL. Functions take a connection; the caller owns the transaction.

Lock order, everywhere: a device row, then its screen row, then code rows. Keeping one order is
what keeps concurrent registrations, new codes and revokes free of deadlocks.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any
from datetime import datetime

import asyncpg
import msgspec

from services.provisioning.models import CodeStatus, Device, DeviceInfo
from shared.errors import Conflict, NotFound
from shared.events import CachePolicy, ScreenConfig, ScreenConfigChanged, ScreenCreated
from shared.pagination import Cursor

# No look-alikes (0/O, 1/I/L): people read these off a TV screen and type them with a remote.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8

_DEVICE_COLUMNS = """id, tenant_id, screen_id, status, device_info, registered_at, revoked_at,
    revoke_reason"""


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


class ScreenCopy(msgspec.Struct, frozen=True):
    id: uuid.UUID
    tenant_id: uuid.UUID
    config: ScreenConfig


class LockedCode(msgspec.Struct, frozen=True):
    code: str
    tenant_id: uuid.UUID
    screen_id: uuid.UUID
    status: str
    expired: bool


# ---- the copy of registry's screens -----------------------------------------------------------


async def upsert_screen(conn: asyncpg.Connection, event: ScreenCreated | ScreenConfigChanged) -> bool:
    """Apply a screen event; older versions than the stored one (redeliveries) change nothing."""
    config = event.config
    status = await conn.execute(
        "INSERT INTO screens (id, tenant_id, version, sync_interval_minutes, heartbeat_interval_minutes,"
        " cache_max_size_gb, cache_retention_days) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version,"
        " sync_interval_minutes = EXCLUDED.sync_interval_minutes,"
        " heartbeat_interval_minutes = EXCLUDED.heartbeat_interval_minutes,"
        " cache_max_size_gb = EXCLUDED.cache_max_size_gb,"
        " cache_retention_days = EXCLUDED.cache_retention_days"
        " WHERE screens.version < EXCLUDED.version",
        event.screen_id,
        event.tenant_id,
        event.version,
        config.sync_interval_minutes,
        config.heartbeat_interval_minutes,
        config.cache_policy.max_size_gb,
        config.cache_policy.retention_days,
    )
    return status.endswith(" 1")


async def insert_screen_seen_at_registry(
    conn: asyncpg.Connection, screen_id: uuid.UUID, tenant_id: uuid.UUID
) -> None:
    """A screen registry knows but whose event has not arrived: version 0, so the event wins."""
    await conn.execute(
        "INSERT INTO screens (id, tenant_id, version) VALUES ($1, $2, 0) ON CONFLICT (id) DO NOTHING",
        screen_id,
        tenant_id,
    )


def _screen(row: asyncpg.Record) -> ScreenCopy:
    return ScreenCopy(
        id=row["id"],
        tenant_id=row["tenant_id"],
        config=ScreenConfig(
            sync_interval_minutes=row["sync_interval_minutes"],
            heartbeat_interval_minutes=row["heartbeat_interval_minutes"],
            cache_policy=CachePolicy(
                max_size_gb=row["cache_max_size_gb"], retention_days=row["cache_retention_days"]
            ),
        ),
    )


async def lock_screen(
    conn: asyncpg.Connection, screen_id: uuid.UUID, *, tenant_id: uuid.UUID | None = None
) -> ScreenCopy | None:
    row = await conn.fetchrow(
        "SELECT id, tenant_id, sync_interval_minutes, heartbeat_interval_minutes, cache_max_size_gb,"
        " cache_retention_days FROM screens WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)"
        " FOR UPDATE",
        screen_id,
        tenant_id,
    )
    return _screen(row) if row else None


async def next_binding_seq(conn: asyncpg.Connection, screen_id: uuid.UUID) -> int:
    return await conn.fetchval(
        "UPDATE screens SET binding_seq = binding_seq + 1 WHERE id = $1 RETURNING binding_seq", screen_id
    )


async def screen_has_active_device(conn: asyncpg.Connection, screen_id: uuid.UUID) -> bool:
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM devices WHERE screen_id = $1 AND status = 'active')", screen_id
    )


# ---- provisioning codes -----------------------------------------------------------------------


async def supersede_pending_codes(conn: asyncpg.Connection, screen_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE provisioning_codes SET status = 'superseded' WHERE screen_id = $1 AND status = 'pending'",
        screen_id,
    )


async def insert_code(
    conn: asyncpg.Connection, *, tenant_id: uuid.UUID, screen_id: uuid.UUID, ttl_seconds: int
) -> asyncpg.Record:
    """A new pending code; a collision with any stored code (1 in 8.5e11 per code) draws again."""
    while True:
        row = await conn.fetchrow(
            "INSERT INTO provisioning_codes (code, tenant_id, screen_id, status, expires_at)"
            " VALUES ($1, $2, $3, 'pending', now() + make_interval(secs => $4))"
            " ON CONFLICT (code) DO NOTHING RETURNING code, expires_at",
            new_code(),
            tenant_id,
            screen_id,
            ttl_seconds,
        )
        if row is not None:
            return row


async def lock_code_screen(conn: asyncpg.Connection, code: str) -> ScreenCopy | None:
    """The screen of pairing code ``code``, locked (screens before codes: the lock order)."""
    row = await conn.fetchrow(
        "SELECT id, tenant_id, sync_interval_minutes, heartbeat_interval_minutes, cache_max_size_gb,"
        " cache_retention_days FROM screens"
        " WHERE id = (SELECT screen_id FROM provisioning_codes WHERE code = $1) FOR UPDATE",
        code,
    )
    return _screen(row) if row else None


async def lock_code(conn: asyncpg.Connection, code: str) -> LockedCode:
    row = await conn.fetchrow(
        "SELECT code, tenant_id, screen_id, status, expires_at <= now() AS expired"
        " FROM provisioning_codes WHERE code = $1 FOR UPDATE",
        code,
    )
    if row is None:
        raise NotFound("no such pairing code")
    return LockedCode(**row)


async def get_code_status(conn: asyncpg.Connection, tenant_id: uuid.UUID, code: str) -> CodeStatus:
    row = await conn.fetchrow(
        "SELECT code, CASE WHEN status = 'pending' AND expires_at <= now() THEN 'expired'"
        " ELSE status END AS status, screen_id, device_id, expires_at, bound_at"
        " FROM provisioning_codes WHERE code = $1 AND tenant_id = $2",
        code,
        tenant_id,
    )
    if row is None:
        raise NotFound("no such provisioning code")
    return CodeStatus(**row)


# ---- devices and keys -------------------------------------------------------------------------


def _device(row: asyncpg.Record | dict[str, Any]) -> Device:
    values = dict(row)
    values["device_info"] = msgspec.convert(row["device_info"], DeviceInfo)
    return Device(**values)


async def bind_device(
    conn: asyncpg.Connection,
    *,
    code: str,
    tenant_id: uuid.UUID,
    screen_id: uuid.UUID,
    key_hash: bytes,
    device_info: DeviceInfo,
    registered_from: str,
) -> tuple[Device, int]:
    """The new device, its key, the code marked bound and the screen's next binding sequence, in
    one statement (one round trip of the registration's transaction instead of four)."""
    try:
        row = await conn.fetchrow(
            "WITH device AS ("
            "  INSERT INTO devices (id, tenant_id, screen_id, status, device_info, registered_from)"
            f"  VALUES ($1, $2, $3, 'active', $4, $5) RETURNING {_DEVICE_COLUMNS}"
            "), key AS (INSERT INTO device_keys (key_hash, device_id) VALUES ($6, $1)"
            "), code AS ("
            "  UPDATE provisioning_codes SET status = 'bound', bound_at = now(), device_id = $1 WHERE code = $7"
            "), seq AS (UPDATE screens SET binding_seq = binding_seq + 1 WHERE id = $3 RETURNING binding_seq)"
            " SELECT device.*, seq.binding_seq FROM device, seq",
            uuid.uuid4(),
            tenant_id,
            screen_id,
            msgspec.to_builtins(device_info),
            registered_from,
            key_hash,
            code,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("the screen already has an active device") from None
    values = dict(row)
    binding_seq = values.pop("binding_seq")
    return _device(values), binding_seq


async def get_device(conn: asyncpg.Connection, tenant_id: uuid.UUID, device_id: uuid.UUID) -> Device:
    row = await conn.fetchrow(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = $1 AND tenant_id = $2", device_id, tenant_id
    )
    if row is None:
        raise NotFound("no such device")
    return _device(row)


async def lock_device(conn: asyncpg.Connection, tenant_id: uuid.UUID, device_id: uuid.UUID) -> Device:
    row = await conn.fetchrow(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
        device_id,
        tenant_id,
    )
    if row is None:
        raise NotFound("no such device")
    return _device(row)


async def list_devices(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    *,
    screen_id: uuid.UUID | None,
    status: str | None,
    after: Cursor | None,
    limit: int,
) -> list[Device]:
    rows = await conn.fetch(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE tenant_id = $1"
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
    return [_device(row) for row in rows]


async def suspend_device(
    conn: asyncpg.Connection, device_id: uuid.UUID, reason: str | None
) -> datetime:
    """Suspend the device, revoke its keys and its codes; returns when."""
    revoked_at = await conn.fetchval(
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


async def revoke_keys(conn: asyncpg.Connection, device_id: uuid.UUID) -> list[bytes]:
    """Revoke the device's active keys; returns their hashes."""
    rows = await conn.fetch(
        "UPDATE device_keys SET revoked_at = now() WHERE device_id = $1 AND revoked_at IS NULL"
        " RETURNING key_hash",
        device_id,
    )
    return [row["key_hash"] for row in rows]


# ---- rate limiting of failed registrations ----------------------------------------------------


async def failures_in_window(
    conn: asyncpg.Connection, client_address: str, window_seconds: int
) -> tuple[int, int]:
    """Failures of ``client_address`` in the current window, and seconds until the window ends."""
    row = await conn.fetchrow(
        "SELECT coalesce((SELECT failures FROM registration_failures"
        "   WHERE client_address = $1 AND window_start = w.start), 0) AS failures,"
        " ceil(extract(epoch FROM w.start + make_interval(secs => $2) - now()))::int AS remaining"
        " FROM (SELECT to_timestamp(floor(extract(epoch FROM now()) / $2) * $2) AS start) w",
        client_address,
        window_seconds,
    )
    return row["failures"], row["remaining"]


async def record_failure(conn: asyncpg.Connection, client_address: str, window_seconds: int) -> None:
    await conn.execute(
        "INSERT INTO registration_failures (client_address, window_start, failures)"
        " VALUES ($1, to_timestamp(floor(extract(epoch FROM now()) / $2) * $2), 1)"
        " ON CONFLICT (client_address, window_start)"
        " DO UPDATE SET failures = registration_failures.failures + 1",
        client_address,
        window_seconds,
    )


async def prune_failures(conn: asyncpg.Connection, older_than_seconds: int) -> None:
    await conn.execute(
        "DELETE FROM registration_failures WHERE window_start < now() - make_interval(secs => $1)",
        older_than_seconds,
    )
