"""On-demand provisioning tokens: an admin creates a single-use, short-lived token for a screen and
hands it to the device (app, Bluetooth, QR); the device trades it for its id and key. Unlike a
pairing code it is not typed by a person, so it is long and unguessable; it is stored only as a
hash."""

from __future__ import annotations

import msgspec
import structlog
from aiohttp import web

from services.provisioning import attempts, binding, queries
from services.provisioning.models import NewProvisioningToken, ProvisioningTokenCreated, TokenProvisioning
from services.provisioning.screens import known_screen, lock_free_screen
from shared.auth import new_secret, principal_of, secret_hash
from shared.db import POOL
from shared.errors import CodeExpired, Conflict, NotFound
from shared.http import read_json, secret_response

log = structlog.get_logger()

_new_token = msgspec.json.Decoder(NewProvisioningToken)
_provisioning = msgspec.json.Decoder(TokenProvisioning)


async def create_token(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request, _new_token)
    token = new_secret("dpt_")
    await known_screen(request, principal.tenant_id, body.screen_id)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        screen = await lock_free_screen(conn, principal.tenant_id, body.screen_id)
        expires_at = await queries.tokens.insert_token(
            conn,
            token_hash=secret_hash(token),
            tenant_id=principal.tenant_id,
            screen_id=screen.id,
            created_by=principal.actor,
            ttl_seconds=body.ttl_seconds,
        )
    log.info("provisioning_token_created", screen_id=str(body.screen_id))
    return secret_response(
        ProvisioningTokenCreated(
            token=token, screen_id=body.screen_id, tenant_id=principal.tenant_id, expires_at=expires_at
        ),
        status=201,
    )


async def provision_device(request: web.Request) -> web.Response:
    """A device trades a provisioning token for its id and key."""
    async with (
        attempts.by_tv(request, attempts.PROVISIONING_TOKEN, _provisioning) as (conn, body, address),
        conn.transaction(),
    ):
        token_hash = secret_hash(body.provisioning_token)
        screen = await queries.tokens.lock_token_screen(conn, token_hash)
        token = await queries.tokens.lock_token(conn, token_hash) if screen else None
        if screen is None or token is None:
            raise NotFound("no such provisioning token")
        if token.used:
            raise Conflict("this provisioning token was already used")
        if token.expired:
            raise CodeExpired("this provisioning token expired; ask for a new one")
        if await queries.screens.screen_has_active_device(conn, screen.id):
            raise Conflict("the screen already has an active device")
        registered = await binding.bind(
            conn,
            screen,
            body.device_info,
            method="provisioning_token",
            actor=None,  # the device itself
            client_address=address,
        )
        await queries.tokens.mark_token_used(conn, token_hash, registered.device_id)
    log.info("device_provisioned", device_id=str(registered.device_id), screen_id=str(registered.screen_id))
    return secret_response(registered, status=201)
