"""API clients and their credentials: a tenant's first client, the secrets the token endpoint
checks, initial access tokens and the clients registered with them, listing and revoking."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from services.registry.models import ApiClient
from shared.db import Connection


class ClientSecret(msgspec.Struct, frozen=True):
    """What the token endpoint checks a client's credentials against."""

    tenant_id: uuid.UUID
    secret_hash: bytes
    expired: bool | None  # None: the secret does not expire
    scope: str  # the most its access tokens may carry


class InitialAccessGrant(msgspec.Struct, frozen=True):
    """What an initial access token grants: a client of this tenant, registered by its issuer."""

    tenant_id: uuid.UUID
    issued_by: str
    scope: str  # the most the client registered with it may get


class RegisteredClient(msgspec.Struct, frozen=True):
    created_at: datetime
    secret_expires_at: datetime | None


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
        "SELECT tenant_id, secret_hash, secret_expires_at <= now() AS expired, scope FROM api_clients"
        " WHERE client_id = $1 AND revoked_at IS NULL",
        client_id,
    )
    return ClientSecret(**row) if row else None


async def insert_initial_access_token(
    conn: Connection,
    *,
    token_hash: bytes,
    tenant_id: uuid.UUID,
    issued_by: str,
    ttl_seconds: int,
    scope: str,
) -> datetime:
    return await conn.fetchval(
        "INSERT INTO initial_access_tokens (token_hash, tenant_id, issued_by, expires_at, scope)"
        " VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5) RETURNING expires_at",
        token_hash,
        tenant_id,
        issued_by,
        ttl_seconds,
        scope,
    )


async def take_initial_access_token(conn: Connection, token_hash: bytes) -> InitialAccessGrant | None:
    """The token's grant if it is unused and unexpired; locked, for its single use."""
    row = await conn.fetchrow(
        "SELECT tenant_id, issued_by, scope FROM initial_access_tokens"
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
    scope: str,
) -> RegisteredClient:
    """The new client, and its initial access token spent, in one statement."""
    row = await conn.fetchrow(
        "WITH client AS ("
        "  INSERT INTO api_clients"
        "    (client_id, tenant_id, secret_hash, client_name, secret_expires_at, registered_by, scope)"
        "  VALUES ($1, $2, $3, $4, CASE WHEN $5 > 0 THEN now() + make_interval(secs => $5) END, $6, $8)"
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
        scope,
    )
    assert row is not None  # an INSERT … RETURNING: always its row
    return RegisteredClient(**row)


_CLIENT_COLUMNS = "client_id, client_name, created_at, secret_expires_at, revoked_at, registered_by, scope"


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


async def expire_initial_access_tokens(conn: Connection, *, issued_by: str) -> int:
    """End the unused initial access tokens ``issued_by`` issued (its client was revoked); how many."""
    status = await conn.execute(
        "UPDATE initial_access_tokens SET expires_at = now()"
        " WHERE issued_by = $1 AND used_at IS NULL AND expires_at > now()",
        issued_by,
    )
    return int(status.split()[-1])
