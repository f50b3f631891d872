"""All of registry's SQL. Functions take a connection; the caller owns the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import msgspec

from services.registry.models import AdminAuditEntry, ApiClient, NewScreen, NewVenue, Playlist, Screen, Venue
from shared.db import Connection
from shared.errors import NotFound
from shared.events import CachePolicy, DeviceBound, DeviceRevoked, PresenceChanged, ScreenConfig
from shared.pagination import Cursor
from shared.projections import PlaylistItem, ScreenContent

_SCREEN_COLUMNS = """id, tenant_id, venue_id, name, orientation, resolution, state, device_id,
    presence, last_seen_at, created_at, updated_at"""
_VENUE_COLUMNS = "id, tenant_id, name, timezone, address, created_at, updated_at"
_CONFIG_COLUMNS = """sync_interval_minutes, heartbeat_interval_minutes, cache_max_size_gb,
    cache_retention_days"""


# ---- tenants and API clients ------------------------------------------------------------------


class NewTenantRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    name: str
    created_at: datetime


class ClientSecret(msgspec.Struct, frozen=True):
    """What the token endpoint checks a client's credentials against."""

    tenant_id: uuid.UUID
    secret_hash: bytes
    expired: bool | None  # None: the secret does not expire


class InitialAccessGrant(msgspec.Struct, frozen=True):
    """What an initial access token grants: a client of this tenant, registered by its issuer."""

    tenant_id: uuid.UUID
    issued_by: str


class RegisteredClient(msgspec.Struct, frozen=True):
    created_at: datetime
    secret_expires_at: datetime | None


async def insert_tenant(conn: Connection, name: str) -> NewTenantRow:
    row = await conn.fetchrow(
        "INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING id, name, created_at",
        uuid.uuid4(),
        name,
    )
    assert row is not None  # an INSERT … RETURNING: always its row
    return NewTenantRow(**row)


async def insert_client(
    conn: Connection, *, client_id: str, tenant_id: uuid.UUID, secret_hash: bytes
) -> None:
    await conn.execute(
        "INSERT INTO api_clients (client_id, tenant_id, secret_hash) VALUES ($1, $2, $3)",
        client_id,
        tenant_id,
        secret_hash,
    )


async def find_client(conn: Connection, client_id: str) -> ClientSecret | None:
    row = await conn.fetchrow(
        "SELECT tenant_id, secret_hash, secret_expires_at <= now() AS expired FROM api_clients"
        " WHERE client_id = $1 AND revoked_at IS NULL",
        client_id,
    )
    return ClientSecret(**row) if row else None


async def insert_initial_access_token(
    conn: Connection, *, token_hash: bytes, tenant_id: uuid.UUID, issued_by: str, ttl_seconds: int
) -> datetime:
    return await conn.fetchval(
        "INSERT INTO initial_access_tokens (token_hash, tenant_id, issued_by, expires_at)"
        " VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at",
        token_hash,
        tenant_id,
        issued_by,
        ttl_seconds,
    )


async def take_initial_access_token(conn: Connection, token_hash: bytes) -> InitialAccessGrant | None:
    """The token's grant if it is unused and unexpired; locked, for its single use."""
    row = await conn.fetchrow(
        "SELECT tenant_id, issued_by FROM initial_access_tokens"
        " WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() FOR UPDATE",
        token_hash,
    )
    return InitialAccessGrant(**row) if row else None


async def register_client(
    conn: Connection,
    *,
    client_id: str,
    tenant_id: uuid.UUID,
    secret_hash: bytes,
    client_name: str | None,
    secret_ttl_seconds: int,
    registered_by: str,
    token_hash: bytes,
) -> RegisteredClient:
    """The new client, and its initial access token spent, in one statement."""
    row = await conn.fetchrow(
        "WITH client AS ("
        "  INSERT INTO api_clients"
        "    (client_id, tenant_id, secret_hash, client_name, secret_expires_at, registered_by)"
        "  VALUES ($1, $2, $3, $4, CASE WHEN $5 > 0 THEN now() + make_interval(secs => $5) END, $6)"
        "  RETURNING created_at, secret_expires_at"
        "), spent AS (UPDATE initial_access_tokens SET used_at = now(), client_id = $1 WHERE token_hash = $7)"
        " SELECT created_at, secret_expires_at FROM client",
        client_id,
        tenant_id,
        secret_hash,
        client_name,
        secret_ttl_seconds,
        registered_by,
        token_hash,
    )
    assert row is not None  # an INSERT … RETURNING: always its row
    return RegisteredClient(**row)


_CLIENT_COLUMNS = "client_id, client_name, created_at, secret_expires_at, revoked_at, registered_by"


async def list_clients(conn: Connection, tenant_id: uuid.UUID) -> list[ApiClient]:
    rows = await conn.fetch(
        f"SELECT {_CLIENT_COLUMNS} FROM api_clients WHERE tenant_id = $1 ORDER BY created_at, client_id",
        tenant_id,
    )
    return [ApiClient(**row) for row in rows]


async def revoke_client(conn: Connection, tenant_id: uuid.UUID, client_id: str) -> ApiClient | None:
    """Revoked now (or as it was, if it already was); None if the tenant has no such client."""
    row = await conn.fetchrow(
        "UPDATE api_clients SET revoked_at = coalesce(revoked_at, now())"
        " WHERE client_id = $1 AND tenant_id = $2"
        f" RETURNING {_CLIENT_COLUMNS}",
        client_id,
        tenant_id,
    )
    return ApiClient(**row) if row else None


async def screens_of_tenant(
    conn: Connection, tenant_id: uuid.UUID, screen_ids: tuple[uuid.UUID, ...]
) -> bool:
    """Whether every one of ``screen_ids`` is a screen of the tenant."""
    return await conn.fetchval(
        "SELECT count(*) = cardinality($2::uuid[]) FROM screens WHERE tenant_id = $1 AND id = ANY($2)",
        tenant_id,
        list(screen_ids),
    )


# ---- venues -----------------------------------------------------------------------------------


async def insert_venue(conn: Connection, tenant_id: uuid.UUID, venue: NewVenue) -> Venue:
    row = await conn.fetchrow(
        f"INSERT INTO venues (id, tenant_id, name, timezone, address) VALUES ($1, $2, $3, $4, $5)"
        f" RETURNING {_VENUE_COLUMNS}",
        uuid.uuid4(),
        tenant_id,
        venue.name,
        venue.timezone,
        venue.address,
    )
    assert row is not None  # an INSERT … RETURNING: always its row
    return Venue(**row)


async def get_venue(conn: Connection, tenant_id: uuid.UUID, venue_id: uuid.UUID) -> Venue:
    row = await conn.fetchrow(
        f"SELECT {_VENUE_COLUMNS} FROM venues WHERE id = $1 AND tenant_id = $2", venue_id, tenant_id
    )
    if row is None:
        raise NotFound("no such venue")
    return Venue(**row)


async def list_venues(
    conn: Connection, tenant_id: uuid.UUID, *, after: Cursor | None, limit: int
) -> list[Venue]:
    rows = await conn.fetch(
        f"SELECT {_VENUE_COLUMNS} FROM venues WHERE tenant_id = $1"
        " AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))"
        " ORDER BY created_at, id LIMIT $4",
        tenant_id,
        after.created_at if after else None,
        after.id if after else None,
        limit,
    )
    return [Venue(**row) for row in rows]


# ---- screens ----------------------------------------------------------------------------------


async def insert_screen(conn: Connection, tenant_id: uuid.UUID, screen: NewScreen) -> Screen:
    row = await conn.fetchrow(
        "INSERT INTO screens (id, tenant_id, venue_id, name, orientation, resolution)"
        f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_SCREEN_COLUMNS}",
        uuid.uuid4(),
        tenant_id,
        screen.venue_id,
        screen.name,
        screen.orientation,
        screen.resolution,
    )
    assert row is not None  # an INSERT … RETURNING: always its row
    return Screen(**row)


async def get_screen(conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> Screen:
    row = await conn.fetchrow(
        f"SELECT {_SCREEN_COLUMNS} FROM screens WHERE id = $1 AND tenant_id = $2", screen_id, tenant_id
    )
    if row is None:
        raise NotFound("no such screen")
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
    rows = await conn.fetch(
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
    return [Screen(**row) for row in rows]


def _config(row: asyncpg.Record) -> ScreenConfig:
    return ScreenConfig(
        sync_interval_minutes=row["sync_interval_minutes"],
        heartbeat_interval_minutes=row["heartbeat_interval_minutes"],
        cache_policy=CachePolicy(
            max_size_gb=row["cache_max_size_gb"], retention_days=row["cache_retention_days"]
        ),
    )


async def get_screen_config(conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> ScreenConfig:
    row = await conn.fetchrow(
        f"SELECT {_CONFIG_COLUMNS} FROM screens WHERE id = $1 AND tenant_id = $2", screen_id, tenant_id
    )
    if row is None:
        raise NotFound("no such screen")
    return _config(row)


async def lock_screen_config(conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> ScreenConfig:
    """The config of a screen whose row stays locked until the transaction ends."""
    row = await conn.fetchrow(
        f"SELECT {_CONFIG_COLUMNS} FROM screens WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
        screen_id,
        tenant_id,
    )
    if row is None:
        raise NotFound("no such screen")
    return _config(row)


async def update_screen_config(conn: Connection, screen_id: uuid.UUID, config: ScreenConfig) -> int:
    """Store ``config``; returns the screen's new version."""
    return await conn.fetchval(
        "UPDATE screens SET sync_interval_minutes = $2, heartbeat_interval_minutes = $3,"
        " cache_max_size_gb = $4, cache_retention_days = $5, version = version + 1, updated_at = now()"
        " WHERE id = $1 RETURNING version",
        screen_id,
        config.sync_interval_minutes,
        config.heartbeat_interval_minutes,
        config.cache_policy.max_size_gb,
        config.cache_policy.retention_days,
    )


def _playlist(row: asyncpg.Record) -> Playlist:
    return Playlist(
        screen_id=row["id"],
        version=row["playlist_version"],
        items=msgspec.convert(row["playlist_items"], list[PlaylistItem]),
        updated_at=row["playlist_updated_at"],
    )


async def get_playlist(conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> Playlist:
    row = await conn.fetchrow(
        "SELECT id, playlist_version, playlist_items, playlist_updated_at FROM screens"
        " WHERE id = $1 AND tenant_id = $2",
        screen_id,
        tenant_id,
    )
    if row is None:
        raise NotFound("no such screen")
    return _playlist(row)


async def replace_playlist(
    conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID, items: list[PlaylistItem]
) -> Playlist:
    row = await conn.fetchrow(
        "UPDATE screens SET playlist_items = $3, playlist_version = playlist_version + 1,"
        " playlist_updated_at = now(), updated_at = now()"
        " WHERE id = $1 AND tenant_id = $2"
        " RETURNING id, playlist_version, playlist_items, playlist_updated_at",
        screen_id,
        tenant_id,
        msgspec.to_builtins(items),
    )
    if row is None:
        raise NotFound("no such screen")
    return _playlist(row)


async def get_screen_content(conn: Connection, screen_id: uuid.UUID) -> ScreenContent:
    """What the gateway serves for a screen, as the ``screen-content`` KV entry holds it."""
    row = await conn.fetchrow(
        f"SELECT id, tenant_id, playlist_version, playlist_items, {_CONFIG_COLUMNS}"
        " FROM screens WHERE id = $1",
        screen_id,
    )
    if row is None:
        raise NotFound("no such screen")
    return ScreenContent(
        screen_id=row["id"],
        tenant_id=row["tenant_id"],
        playlist_version=row["playlist_version"],
        items=msgspec.convert(row["playlist_items"], list[PlaylistItem]),
        config=_config(row),
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
    return status.endswith(" 1")


async def apply_device_revoked(conn: Connection, event: DeviceRevoked) -> bool:
    status = await conn.execute(
        "UPDATE screens SET state = 'provisioning', device_id = NULL, binding_seq = $2, updated_at = now()"
        " WHERE id = $1 AND binding_seq < $2",
        event.screen_id,
        event.binding_seq,
    )
    return status.endswith(" 1")


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
    return status.endswith(" 1")


# ---- the admin audit trail --------------------------------------------------------------------


async def add_audit(
    conn: Connection,
    tenant_id: uuid.UUID,
    *,
    actor: str,
    action: str,
    resource_id: object,
    client_address: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO admin_audit (tenant_id, actor, action, resource_id, client_address)"
        " VALUES ($1, $2, $3, $4, $5)",
        tenant_id,
        actor,
        action,
        str(resource_id),
        client_address,
    )


async def list_audit(
    conn: Connection, tenant_id: uuid.UUID, *, before: int | None, limit: int
) -> list[AdminAuditEntry]:
    """Newest first, older than ``before``."""
    rows = await conn.fetch(
        "SELECT id, at, actor, action, resource_id, client_address FROM admin_audit"
        " WHERE tenant_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        tenant_id,
        before,
        limit,
    )
    return [AdminAuditEntry(**row) for row in rows]
