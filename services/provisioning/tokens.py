"""On-demand provisioning tokens: an admin creates a single-use, short-lived token
for a screen and hands it to the device (app, Bluetooth, QR); the device trades it for its id and
key. Unlike a pairing code it is not typed by a person, so it is long and unguessable; it is
stored only as a hash."""

from __future__ import annotations

import asyncpg
import msgspec
import structlog
from aiohttp import web

from services.provisioning import binding, queries
from services.provisioning.attempts import counted_attempt
from services.provisioning.handlers import client_actor, known_screen
from services.provisioning.models import (
    NewProvisioningToken,
    ProvisioningTokenCreated,
    Registered,
    TokenProvisioning,
)
from shared.auth import new_secret, principal_of, secret_hash
from shared.db import POOL
from shared.errors import CodeExpired, Conflict, NotFound
from shared.web import json_response, read_json

log = structlog.get_logger()

_new_token = msgspec.json.Decoder(NewProvisioningToken)
_provisioning = msgspec.json.Decoder(TokenProvisioning)


async def create_token(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request, _new_token)
    token = new_secret("dpt_")
    await known_screen(request, principal.tenant_id, body.screen_id)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        screen = await queries.lock_screen(conn, body.screen_id, tenant_id=principal.tenant_id)
        if screen is None:
            raise NotFound("no such screen")
        if await queries.screen_has_active_device(conn, screen.id):
            raise Conflict("the screen is not in provisioning: revoke its device first")
        expires_at = await queries.insert_token(
            conn,
            token_hash=secret_hash(token),
            tenant_id=principal.tenant_id,
            screen_id=screen.id,
            created_by=client_actor(principal),
            ttl_seconds=body.ttl_seconds,
        )
    log.info("provisioning_token_created", screen_id=str(body.screen_id))
    return json_response(
        ProvisioningTokenCreated(
            token=token, screen_id=body.screen_id, tenant_id=principal.tenant_id, expires_at=expires_at
        ),
        status=201,
    )


async def provision_device(request: web.Request) -> web.Response:
    registered = await counted_attempt(request, _provisioning, _provision)
    log.info("device_provisioned", device_id=str(registered.device_id), screen_id=str(registered.screen_id))
    return json_response(registered, status=201)


async def _provision(conn: asyncpg.Connection, body: TokenProvisioning, address: str) -> Registered:
    token_hash = secret_hash(body.provisioning_token)
    async with conn.transaction():
        screen = await queries.lock_token_screen(conn, token_hash)
        if screen is None:
            raise NotFound("no such provisioning token")
        token = await queries.lock_token(conn, token_hash)
        if token["used"]:
            raise Conflict("this provisioning token was already used")
        if token["expired"]:
            raise CodeExpired("this provisioning token expired; ask for a new one")
        if await queries.screen_has_active_device(conn, screen.id):
            raise Conflict("the screen already has an active device")
        registered = await binding.bind(
            conn,
            screen,
            body.device_info,
            method="provisioning_token",
            actor="device",
            client_address=address,
        )
        await queries.mark_token_used(conn, token_hash, registered.device_id)
    return registered
