"""API clients beyond a tenant's first (dynamic client registration, RFC 7591).

A tenant admin issues an initial access token (single use, short-lived) and gives it to an
integration; the integration registers itself at ``POST /oauth/register`` and gets its own
``client_id``/``client_secret``, then uses the client credentials grant as every client does. The
tenant lists its clients and revokes them: a revoked client gets no new access token, every
service refuses those it holds within moments (the ``revoked-clients`` bucket, see
``shared.revocations``), and the initial access tokens it issued and nobody used die with it."""

from __future__ import annotations

import uuid
from datetime import timedelta

import msgspec
import structlog
from aiohttp import web

from services.registry import audit, queries
from services.registry.models import (
    ApiClient,
    ClientList,
    ClientMetadata,
    ClientRegistered,
    InitialAccessToken,
    NewInitialAccessToken,
)
from shared import outbox
from shared.app_keys import SETTINGS
from shared.auth import SCOPES, new_secret, principal_of, secret_hash, within
from shared.db import POOL, Connection
from shared.errors import Conflict, NotFound, OAuthError, ServiceError
from shared.http import json_response, read_json, secret_response, text_param
from shared.projections import REVOKED_CLIENTS_BUCKET, RevokedClient

log = structlog.get_logger()

_new_initial_access_token = msgspec.json.Decoder(NewInitialAccessToken)
_client_metadata = msgspec.json.Decoder(ClientMetadata)
AUTH_METHODS = ("client_secret_basic", "client_secret_post")


async def issue_initial_access_token(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request, _new_initial_access_token)
    token = new_secret("iat_")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        expires_at = await queries.clients.insert_initial_access_token(
            conn,
            token_hash=secret_hash(token),
            tenant_id=principal.tenant_id,
            issued_by=principal.actor,
            ttl_seconds=body.ttl_seconds,
            scope=principal.scope,
        )
        # The token itself is a secret: the trail names it by its id, the digest it is stored under.
        await audit.record(
            request,
            conn,
            principal.tenant_id,
            principal.actor,
            "initial_access_token.issued",
            secret_hash(token).hex(),
        )
    log.info("initial_access_token_issued")
    return secret_response(InitialAccessToken(token=token, expires_at=expires_at), status=201)


async def register_client(request: web.Request) -> web.Response:
    """RFC 7591 §3: errors in §3.2.2's form (and ours), the secret shown once."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _invalid_token("send Authorization: Bearer <initial access token>")
    try:
        metadata = await read_json(request, _client_metadata)
    except ServiceError as exc:  # §3.2.2: every body that does not decode is invalid_client_metadata
        raise OAuthError(400, "invalid_client_metadata", exc.message) from None
    if metadata.redirect_uris:
        raise OAuthError(400, "invalid_redirect_uri", "this server has no redirect-based grants")
    if set(metadata.grant_types) != {"client_credentials"}:
        raise OAuthError(400, "invalid_client_metadata", "grant_types: only client_credentials")
    if metadata.token_endpoint_auth_method not in AUTH_METHODS:
        raise OAuthError(400, "invalid_client_metadata", f"token_endpoint_auth_method: one of {AUTH_METHODS}")
    if metadata.scope is not None and within(metadata.scope, " ".join(SCOPES)) is None:
        raise OAuthError(
            400, "invalid_client_metadata", f"scope: space-separated, each one of {' '.join(SCOPES)}"
        )
    token_hash = secret_hash(token.strip())
    client_id, client_secret = "cli_" + uuid.uuid4().hex, new_secret("cs_")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        grant = await queries.clients.take_initial_access_token(conn, token_hash)
        if grant is None:
            raise _invalid_token("unknown, used or expired initial access token")
        # No more than the token that issued the initial access token had; by default, as much.
        scope = within(metadata.scope or grant.scope, grant.scope)
        if scope is None:
            raise OAuthError(400, "invalid_client_metadata", f"scope: this registration allows {grant.scope}")
        client = await queries.clients.register_client(
            conn,
            client_id=client_id,
            tenant_id=grant.tenant_id,
            secret_hash=secret_hash(client_secret),
            client_name=metadata.client_name,
            secret_ttl_seconds=request.app[SETTINGS].client_secret_ttl_seconds,
            registered_by=grant.issued_by,
            token_hash=token_hash,
            scope=scope,
        )
        await audit.record(request, conn, grant.tenant_id, grant.issued_by, "client.registered", client_id)
    log.info("client_registered", client_id=client_id, tenant_id=str(grant.tenant_id))
    expires_at = client.secret_expires_at
    return json_response(
        ClientRegistered(
            client_id=client_id,
            client_secret=client_secret,
            client_id_issued_at=int(client.created_at.timestamp()),
            client_secret_expires_at=int(expires_at.timestamp()) if expires_at else 0,
            grant_types=["client_credentials"],
            token_endpoint_auth_method=metadata.token_endpoint_auth_method,
            scope=scope,
            client_name=metadata.client_name,
        ),
        status=201,
        headers={"Cache-Control": "no-store"},
    )


def _invalid_token(description: str) -> OAuthError:
    """RFC 6750 §3.1, as RFC 7591 §3 asks for a bad initial access token."""
    error = OAuthError(401, "invalid_token", description)
    error.headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{description}"'
    return error


async def list_clients(request: web.Request) -> web.Response:
    principal = principal_of(request)
    async with request.app[POOL].acquire() as conn:
        clients = await queries.clients.list_clients(conn, principal.tenant_id)
    return json_response(ClientList(items=clients))


async def revoke_client(request: web.Request) -> web.Response:
    principal = principal_of(request)
    client_id = text_param(request, "clientId", "client")
    if client_id == principal.client_id:
        raise Conflict("a client cannot revoke itself; revoke it with another client of the tenant")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        client = await queries.clients.revoke_client(conn, principal.tenant_id, client_id)
        if client is None:
            raise NotFound("no such client")
        await stop_revoked_client(request, conn, principal.tenant_id, client)
        await audit.record(request, conn, principal.tenant_id, principal.actor, "client.revoked", client_id)
    log.info("client_revoked", client_id=client_id)
    return json_response(client)


async def stop_revoked_client(
    request: web.Request, conn: Connection, tenant_id: uuid.UUID, client: ApiClient
) -> None:
    """In the revoke's transaction: the revocation on its way to every service (until the last
    token the client could have got expires), and its unused initial access tokens spent."""
    assert client.revoked_at is not None  # what revoke_client answers is revoked
    until = client.revoked_at + timedelta(seconds=request.app[SETTINGS].token_ttl_seconds)
    await outbox.put_kv(
        conn,
        REVOKED_CLIENTS_BUCKET,
        client.client_id,
        RevokedClient(tenant_id=tenant_id, revoked_at=client.revoked_at, until=until),
    )
    killed = await queries.clients.expire_initial_access_tokens(conn, issued_by=f"client:{client.client_id}")
    log.info("revoked_client_stopped", client_id=client.client_id, initial_access_tokens=killed)
