"""All of provisioning's SQL. Functions take a connection; the caller owns the transaction.

Lock order, everywhere: a device row, then its screen row, then code rows. Keeping one order is
what keeps concurrent registrations, new codes and revokes free of deadlocks.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from services.provisioning.models import (
    AuditEntry,
    CodeStatus,
    Device,
    DeviceAuthorization,
    DeviceInfo,
    Serial,
)
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


async def screen_exists(conn: asyncpg.Connection, screen_id: uuid.UUID, tenant_id: uuid.UUID) -> bool:
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM screens WHERE id = $1 AND tenant_id = $2)", screen_id, tenant_id
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


_SCREEN_COLUMNS = """id, tenant_id, sync_interval_minutes, heartbeat_interval_minutes, cache_max_size_gb,
    cache_retention_days"""


async def lock_screen(
    conn: asyncpg.Connection, screen_id: uuid.UUID, *, tenant_id: uuid.UUID | None = None
) -> ScreenCopy | None:
    row = await conn.fetchrow(
        f"SELECT {_SCREEN_COLUMNS} FROM screens WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2)"
        " FOR UPDATE",
        screen_id,
        tenant_id,
    )
    return _screen(row) if row else None


async def _lock_screen_of(conn: asyncpg.Connection, screen_of: str, key: object) -> ScreenCopy | None:
    """The screen that a code, token, serial or authorization (``screen_of``: a query of its
    screen_id by $1) leads to, locked. Every flow locks the screen before that row: one lock
    order, so concurrent flows on one screen cannot deadlock."""
    row = await conn.fetchrow(
        f"SELECT {_SCREEN_COLUMNS} FROM screens WHERE id = ({screen_of}) FOR UPDATE", key
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
    return await _lock_screen_of(conn, "SELECT screen_id FROM provisioning_codes WHERE code = $1", code)


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


# ---- provisioning tokens ----------------------------------------------------------------------


async def insert_token(
    conn: asyncpg.Connection,
    *,
    token_hash: bytes,
    tenant_id: uuid.UUID,
    screen_id: uuid.UUID,
    created_by: str,
    ttl_seconds: int,
) -> datetime:
    return await conn.fetchval(
        "INSERT INTO provisioning_tokens (token_hash, tenant_id, screen_id, created_by, expires_at)"
        " VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING expires_at",
        token_hash,
        tenant_id,
        screen_id,
        created_by,
        ttl_seconds,
    )


async def lock_token_screen(conn: asyncpg.Connection, token_hash: bytes) -> ScreenCopy | None:
    return await _lock_screen_of(
        conn, "SELECT screen_id FROM provisioning_tokens WHERE token_hash = $1", token_hash
    )


async def lock_token(conn: asyncpg.Connection, token_hash: bytes) -> asyncpg.Record:
    """``used`` and ``expired`` of a token, locked: its single use is decided under this lock."""
    return await conn.fetchrow(
        "SELECT used_at IS NOT NULL AS used, expires_at <= now() AS expired FROM provisioning_tokens"
        " WHERE token_hash = $1 FOR UPDATE",
        token_hash,
    )


async def mark_token_used(conn: asyncpg.Connection, token_hash: bytes, device_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE provisioning_tokens SET used_at = now(), device_id = $2 WHERE token_hash = $1",
        token_hash,
        device_id,
    )


# ---- devices and keys -------------------------------------------------------------------------


def _device(row: asyncpg.Record | dict[str, Any]) -> Device:
    values = dict(row)
    values["device_info"] = msgspec.convert(row["device_info"], DeviceInfo)
    return Device(**values)


async def bind_device(
    conn: asyncpg.Connection,
    *,
    tenant_id: uuid.UUID,
    screen_id: uuid.UUID,
    key_hash: bytes,
    device_info: DeviceInfo,
    recovery_secret_hash: bytes | None,
    method: str,
    actor: str,
    client_address: str | None,
    code: str | None = None,
    device_id: uuid.UUID | None = None,
) -> tuple[Device, int]:
    """The new device (a new id unless ``device_id`` is given), its key, its audit row, the code
    (if any) marked bound and the screen's next binding sequence, in one statement (one round trip
    instead of five)."""
    try:
        row = await conn.fetchrow(
            "WITH device AS ("
            "  INSERT INTO devices (id, tenant_id, screen_id, status, device_info, registered_from,"
            "   hardware_id, recovery_secret_hash)"
            f"  VALUES ($1, $2, $3, 'active', $4, $5, $8, $9) RETURNING {_DEVICE_COLUMNS}"
            "), key AS (INSERT INTO device_keys (key_hash, device_id) VALUES ($6, $1)"
            "), code AS ("
            "  UPDATE provisioning_codes SET status = 'bound', bound_at = now(), device_id = $1 WHERE code = $7"
            "), audit AS ("
            "  INSERT INTO binding_audit (tenant_id, device_id, screen_id, action, method, actor, client_address)"
            "  SELECT tenant_id, id, screen_id, 'bound', $10, $11, $5 FROM device"
            "), seq AS (UPDATE screens SET binding_seq = binding_seq + 1 WHERE id = $3 RETURNING binding_seq)"
            " SELECT device.*, seq.binding_seq FROM device, seq",
            device_id or uuid.uuid4(),
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
    values = dict(row)
    binding_seq = values.pop("binding_seq")
    return _device(values), binding_seq


async def rebind_device(
    conn: asyncpg.Connection,
    device_id: uuid.UUID,
    *,
    key_hash: bytes,
    device_info: DeviceInfo,
    recovery_secret_hash: bytes | None,
    method: str,
    actor: str,
    client_address: str | None,
    code: str | None = None,
) -> tuple[Device, int]:
    """A suspended device active again on its screen (factory-reset recovery): same id, a new key."""
    try:
        row = await conn.fetchrow(
            "WITH device AS ("
            "  UPDATE devices SET status = 'active', device_info = $2, registered_from = $3,"
            "   registered_at = now(), revoked_at = NULL, revoke_reason = NULL, recovery_secret_hash = $4"
            f"  WHERE id = $1 RETURNING {_DEVICE_COLUMNS}"
            "), key AS (INSERT INTO device_keys (key_hash, device_id) VALUES ($5, $1)"
            "), code AS ("
            "  UPDATE provisioning_codes SET status = 'bound', bound_at = now(), device_id = $1 WHERE code = $6"
            "), audit AS ("
            "  INSERT INTO binding_audit (tenant_id, device_id, screen_id, action, method, actor, client_address)"
            "  SELECT tenant_id, id, screen_id, 'bound', $7, $8, $3 FROM device"
            "), seq AS (UPDATE screens SET binding_seq = binding_seq + 1"
            "   WHERE id = (SELECT screen_id FROM device) RETURNING binding_seq)"
            " SELECT device.*, seq.binding_seq FROM device, seq",
            device_id,
            msgspec.to_builtins(device_info),
            client_address,
            recovery_secret_hash,
            key_hash,
            code,
            method,
            actor,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("the screen already has an active device") from None
    values = dict(row)
    binding_seq = values.pop("binding_seq")
    return _device(values), binding_seq


async def add_key(conn: asyncpg.Connection, device_id: uuid.UUID, key_hash: bytes) -> None:
    await conn.execute("INSERT INTO device_keys (key_hash, device_id) VALUES ($1, $2)", key_hash, device_id)


async def add_audit(
    conn: asyncpg.Connection,
    device: Device,
    *,
    action: str,
    method: str,
    actor: str,
    client_address: str | None,
    reason: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO binding_audit (tenant_id, device_id, screen_id, action, method, actor, client_address,"
        " reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        device.tenant_id,
        device.id,
        device.screen_id,
        action,
        method,
        actor,
        client_address,
        reason,
    )


async def audit_trail(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, device_id: uuid.UUID
) -> list[AuditEntry]:
    rows = await conn.fetch(
        "SELECT id, at, device_id, screen_id, action, method, actor, client_address, reason FROM binding_audit"
        " WHERE tenant_id = $1 AND device_id = $2 ORDER BY id",
        tenant_id,
        device_id,
    )
    return [AuditEntry(**row) for row in rows]


async def tenant_audit_trail(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, *, before: int | None, limit: int
) -> list[AuditEntry]:
    """The tenant's binds, unbinds and recoveries, newest first, older than ``before``."""
    rows = await conn.fetch(
        "SELECT id, at, device_id, screen_id, action, method, actor, client_address, reason FROM binding_audit"
        " WHERE tenant_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        tenant_id,
        before,
        limit,
    )
    return [AuditEntry(**row) for row in rows]


async def recoverable_device(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID, hardware_id: str
) -> uuid.UUID | None:
    """The suspended device of this hardware that was last bound to this screen, if any."""
    return await conn.fetchval(
        "SELECT id FROM devices WHERE tenant_id = $1 AND screen_id = $2 AND hardware_id = $3"
        " AND status = 'suspended' ORDER BY registered_at DESC LIMIT 1",
        tenant_id,
        screen_id,
        hardware_id,
    )


async def lock_device_by_recovery_secret(
    conn: asyncpg.Connection, secret_hash: bytes, hardware_id: str
) -> Device | None:
    row = await conn.fetchrow(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE recovery_secret_hash = $1 AND hardware_id = $2 FOR UPDATE",
        secret_hash,
        hardware_id,
    )
    return _device(row) if row else None


async def lock_device_by_key(conn: asyncpg.Connection, key_hash: bytes) -> tuple[Device, bool] | None:
    """The device of a key, locked, and whether the key still works."""
    row = await conn.fetchrow(
        f"SELECT {_DEVICE_COLUMNS}, k.key_active FROM devices,"
        " LATERAL (SELECT revoked_at IS NULL AS key_active FROM device_keys"
        "   WHERE key_hash = $1 AND device_id = devices.id) k"
        " WHERE devices.id = (SELECT device_id FROM device_keys WHERE key_hash = $1) FOR UPDATE OF devices",
        key_hash,
    )
    if row is None:
        return None
    values = dict(row)
    key_active = values.pop("key_active")
    return _device(values), key_active


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


async def suspend_device(conn: asyncpg.Connection, device_id: uuid.UUID, reason: str | None) -> datetime:
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


# ---- device authorizations (RFC 8628) ---------------------------------------------------------

_AUTHORIZATION_COLUMNS = """user_code, CASE WHEN status IN ('pending', 'approved') AND expires_at <= now()
    THEN 'expired' ELSE status END AS status, device_info, requested_from, created_at, expires_at, screen_id"""


async def insert_authorization(
    conn: asyncpg.Connection,
    *,
    device_code_hash: bytes,
    new_user_code: Callable[[], str],
    client_id: str,
    device_info: DeviceInfo,
    requested_from: str,
    ttl_seconds: int,
    interval_seconds: int,
) -> str:
    """A pending authorization; returns its user code (drawn again on the rare collision)."""
    while True:
        user_code = new_user_code()
        inserted = await conn.fetchval(
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
    values = dict(row)
    values["device_info"] = msgspec.convert(row["device_info"], DeviceInfo)
    return DeviceAuthorization(**values)


async def get_authorization(
    conn: asyncpg.Connection, user_code: str, tenant_id: uuid.UUID, *, lock: bool = False
) -> tuple[DeviceAuthorization, asyncpg.Record] | None:
    """A pending authorization, or one this tenant decided; with its raw row. Another tenant's
    decision is not found (never 403 across tenants)."""
    row = await conn.fetchrow(
        f"SELECT {_AUTHORIZATION_COLUMNS}, tenant_id, expires_at <= now() AS expired FROM device_authorizations"
        " WHERE user_code = $1 AND (tenant_id IS NULL OR tenant_id = $2)" + (" FOR UPDATE" if lock else ""),
        user_code,
        tenant_id,
    )
    if row is None:
        return None
    values = dict(row)
    return _authorization({k: values[k] for k in DeviceAuthorization.__struct_fields__}), row


async def decide_authorization(
    conn: asyncpg.Connection,
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
    return _authorization(row)


async def lock_authorization_screen(conn: asyncpg.Connection, device_code_hash: bytes) -> ScreenCopy | None:
    """None while the authorization is not approved (it names no screen yet)."""
    return await _lock_screen_of(
        conn, "SELECT screen_id FROM device_authorizations WHERE device_code_hash = $1", device_code_hash
    )


async def lock_authorization(conn: asyncpg.Connection, device_code_hash: bytes) -> asyncpg.Record | None:
    """What a poll decides on: status, expiry, the pacing, who approved, what the TV reported."""
    return await conn.fetchrow(
        "SELECT status, client_id, expires_at <= now() AS expired, interval_seconds,"
        " last_polled_at IS NOT NULL AND last_polled_at > now() - make_interval(secs => interval_seconds)"
        "  AS too_soon, screen_id, decided_by, device_info, requested_from"
        " FROM device_authorizations WHERE device_code_hash = $1 FOR UPDATE",
        device_code_hash,
    )


async def record_poll(conn: asyncpg.Connection, device_code_hash: bytes, *, slow_down: bool) -> int:
    """Note the poll; ``slow_down`` adds 5 s to the interval for good (RFC 8628 §3.5). Returns it."""
    return await conn.fetchval(
        "UPDATE device_authorizations SET last_polled_at = now(),"
        " interval_seconds = interval_seconds + CASE WHEN $2 THEN 5 ELSE 0 END"
        " WHERE device_code_hash = $1 RETURNING interval_seconds",
        device_code_hash,
        slow_down,
    )


async def mark_authorization_delivered(
    conn: asyncpg.Connection, device_code_hash: bytes, device_id: uuid.UUID
) -> None:
    await conn.execute(
        "UPDATE device_authorizations SET status = 'delivered', device_id = $2 WHERE device_code_hash = $1",
        device_code_hash,
        device_id,
    )


# ---- pre-provisioned devices and claim mode ---------------------------------------------------


async def insert_factory_devices(conn: asyncpg.Connection, devices: list[tuple[uuid.UUID, bytes]]) -> None:
    await conn.executemany("INSERT INTO factory_devices (id, key_hash) VALUES ($1, $2)", devices)


async def lock_factory_device_by_key(conn: asyncpg.Connection, key_hash: bytes) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, claimed_at IS NOT NULL AS claimed FROM factory_devices WHERE key_hash = $1 FOR UPDATE",
        key_hash,
    )


async def open_claim_mode(
    conn: asyncpg.Connection,
    device_id: uuid.UUID,
    *,
    code_hash: bytes,
    seconds: int,
    device_info: DeviceInfo,
    requested_from: str,
) -> datetime | None:
    """None when the code collides with another device's (draw again)."""
    try:
        async with conn.transaction():
            return await conn.fetchval(
                "UPDATE factory_devices SET claim_code_hash = $2,"
                " claim_expires_at = now() + make_interval(secs => $3), device_info = $4,"
                " claim_requested_from = $5 WHERE id = $1 RETURNING claim_expires_at",
                device_id,
                code_hash,
                seconds,
                msgspec.to_builtins(device_info),
                requested_from,
            )
    except asyncpg.UniqueViolationError:
        return None


async def lock_factory_device_by_claim(conn: asyncpg.Connection, code_hash: bytes) -> asyncpg.Record | None:
    """A device in claim mode with this code, locked: its single claim is decided under this lock."""
    return await conn.fetchrow(
        "SELECT id, key_hash, device_info, claim_requested_from, claimed_at IS NOT NULL AS claimed"
        " FROM factory_devices WHERE claim_code_hash = $1 AND claim_expires_at > now() FOR UPDATE",
        code_hash,
    )


async def mark_claimed(conn: asyncpg.Connection, device_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE factory_devices SET claimed_at = now(), claim_code_hash = NULL WHERE id = $1", device_id
    )


# ---- serial numbers ---------------------------------------------------------------------------

_SERIAL_COLUMNS = """serial, screen_id, CASE WHEN activated_at IS NOT NULL THEN 'activated'
    WHEN enabled_until IS NULL THEN 'registered' WHEN enabled_until <= now() THEN 'expired'
    ELSE 'enabled' END AS status, created_at, enabled_until, activated_at, device_id"""


async def lock_serials(conn: asyncpg.Connection, serials: list[str]) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT serial, tenant_id, screen_id, activated_at IS NOT NULL AS activated FROM serials"
        " WHERE serial = ANY($1) ORDER BY serial FOR UPDATE",
        serials,
    )


async def upsert_serials(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, rows: list[tuple[str, uuid.UUID]]
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
    conn: asyncpg.Connection, tenant_id: uuid.UUID, *, status: str | None, after: str | None, limit: int
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


async def enable_serial(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, serial: str, minutes: int
) -> Serial | None:
    """Open (or reopen) the activation window of a serial not activated yet."""
    row = await conn.fetchrow(
        "UPDATE serials SET enabled_until = now() + make_interval(mins => $3)"
        f" WHERE serial = $1 AND tenant_id = $2 AND activated_at IS NULL RETURNING {_SERIAL_COLUMNS}",
        serial,
        tenant_id,
        minutes,
    )
    return Serial(**row) if row else None


async def get_serial(conn: asyncpg.Connection, tenant_id: uuid.UUID, serial: str) -> Serial | None:
    row = await conn.fetchrow(
        f"SELECT {_SERIAL_COLUMNS} FROM serials WHERE serial = $1 AND tenant_id = $2", serial, tenant_id
    )
    return Serial(**row) if row else None


async def lock_serial_screen(conn: asyncpg.Connection, serial: str) -> ScreenCopy | None:
    return await _lock_screen_of(conn, "SELECT screen_id FROM serials WHERE serial = $1", serial)


async def lock_serial(conn: asyncpg.Connection, serial: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_SERIAL_COLUMNS}, tenant_id FROM serials WHERE serial = $1 FOR UPDATE", serial
    )


async def mark_serial_activated(conn: asyncpg.Connection, serial: str, device_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE serials SET activated_at = now(), device_id = $2 WHERE serial = $1", serial, device_id
    )
