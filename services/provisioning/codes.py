"""Screen-first pairing with a code: an admin draws a pairing code for a screen in provisioning,
the TV shows where to type it, and the TV that sends it gets its device id and key."""

from __future__ import annotations

import re

import msgspec
import structlog
from aiohttp import web

from services.provisioning import attempts, binding, queries
from services.provisioning.models import PAIRING_CODE_PATTERN, CodeCreated, NewCode, Registration
from services.provisioning.screens import known_screen, lock_free_screen
from shared.app_keys import SETTINGS
from shared.auth import tenant_of
from shared.db import POOL
from shared.errors import BadRequest, CodeExpired, Conflict, ErrorDetail, NotFound
from shared.http import json_response, read_json, secret_response

log = structlog.get_logger()

_new_code_body = msgspec.json.Decoder(NewCode)
_registration = msgspec.json.Decoder(Registration)
_code_pattern = re.compile(PAIRING_CODE_PATTERN)


async def create_code(request: web.Request) -> web.Response:
    """A pairing code for a screen in provisioning; it supersedes the screen's pending code."""
    tenant_id = tenant_of(request)
    body = await read_json(request, _new_code_body)
    await known_screen(request, tenant_id, body.screen_id)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        screen = await lock_free_screen(conn, tenant_id, body.screen_id)
        await queries.codes.supersede_pending_codes(conn, screen.id)
        code = await queries.codes.insert_code(
            conn, tenant_id=tenant_id, screen_id=screen.id, ttl_seconds=request.app[SETTINGS].code_ttl_seconds
        )
    log.info("provisioning_code_created", screen_id=str(body.screen_id))
    return secret_response(
        CodeCreated(
            code=code.code,
            screen_id=body.screen_id,
            tenant_id=tenant_id,
            status="pending",
            expires_at=code.expires_at,
        ),
        status=201,
    )


async def get_code_status(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    code = request.match_info["code"]
    if not _code_pattern.match(code):
        raise BadRequest("code must be 8 characters A-Z or 0-9", details=[ErrorDetail("code", "pattern")])
    async with request.app[POOL].acquire() as conn:
        status = await queries.codes.get_code_status(conn, tenant_id, code)
    return json_response(status)


async def register_device(request: web.Request) -> web.Response:
    """A TV trades a pairing code for its device key; the whole bind is one transaction."""
    async with (
        attempts.by_tv(request, attempts.PAIRING_CODE, _registration) as (conn, body, address),
        conn.transaction(),
    ):
        screen = await queries.codes.lock_code_screen(conn, body.pairing_code)
        if screen is None:
            raise NotFound("no such pairing code")
        code = await queries.codes.lock_code(conn, body.pairing_code)
        if code.status == "superseded":
            raise CodeExpired("this code was superseded by a newer one; use the newest code")
        if code.status != "pending":
            raise Conflict("this code was already used")
        if code.expired:
            raise CodeExpired("this code expired; generate a new one")
        registered = await binding.bind(
            conn,
            screen,
            body.device_info,
            method="code",
            actor=None,  # the device itself
            client_address=address,
            code=code.code,
        )
    log.info(
        "device_registered",
        device_id=str(registered.device_id),
        screen_id=str(registered.screen_id),
        tenant_id=str(registered.tenant_id),
    )
    return secret_response(registered, status=201)
