"""Remote commands: an admin sends one to a screen's TV (reload, reboot, screenshot, identify,
clear_cache, display_power), lists and reads them, cancels an open one, and reads the screenshot a
TV took on command. What happens to a command after it was sent is ``command_lifecycle``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats.js.errors
import structlog
from aiohttp import web
from nats.js.object_store import ObjectStore

from services.registry import queries
from services.registry.command_lifecycle import publish_open, record_step
from services.registry.command_models import (
    COMMAND_ARGS,
    COMMAND_STATUSES,
    OPEN_STATUSES,
    CommandPage,
    NewCommand,
)
from shared import errors
from shared.app_keys import SETTINGS
from shared.auth import principal_of, tenant_of
from shared.bus import JS
from shared.db import POOL
from shared.errors import Conflict, NotFound
from shared.http import client_address, json_response, read_json, uuid_param
from shared.pagination import choice_query, next_cursor, page_params
from shared.projections import SCREENSHOTS_BUCKET, screenshot_object

log = structlog.get_logger()

# Anything a client can make us hold has a limit: a screen's TV has at most this many to carry out.
MAX_OPEN_COMMANDS = 20
# What a stored screenshot may be served as (its object's description names it).
SCREENSHOT_TYPES = ("image/png", "image/jpeg")
SCREENSHOTS = web.AppKey("SCREENSHOTS", ObjectStore)

_new_command = msgspec.json.Decoder(NewCommand)
# Each type's args as a body of their own, so a bad one is named "args.<field>" in words.
_ARGS_BODIES = {
    name: msgspec.defstruct(f"{name}_body", [("args", args)], kw_only=True)
    for name, args in COMMAND_ARGS.items()
}


def command_args(command: NewCommand) -> dict[str, Any]:
    """The command's args as its type takes them (defaults filled in, unknown fields left out);
    a 400 naming each bad one."""
    given = command.args or {}
    try:
        args = msgspec.convert(given, COMMAND_ARGS[command.type])
    except msgspec.ValidationError:
        raise errors.invalid_body(_ARGS_BODIES[command.type], {"args": given}) from None
    return msgspec.to_builtins(args)


async def create_command(request: web.Request) -> web.Response:
    principal = principal_of(request)
    tenant_id = principal.tenant_id
    screen_id = uuid_param(request)
    body = await read_json(request, _new_command)
    args = command_args(body)
    address = client_address(request, request.app[SETTINGS].trusted_proxies)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        await queries.commands.lock_screen(conn, tenant_id, screen_id)
        if await queries.commands.count_open(conn, screen_id) >= MAX_OPEN_COMMANDS:
            raise Conflict(
                f"the screen has {MAX_OPEN_COMMANDS} open commands already: cancel one, or wait until"
                " its TV has carried them out or they expired"
            )
        command = await queries.commands.insert_command(
            conn,
            tenant_id,
            screen_id,
            command_type=body.type,
            args=args,
            ttl_seconds=body.ttl_seconds,
            created_by=principal.actor,
        )
        await record_step(conn, tenant_id, command, actor=principal.actor, client_address=address)
        await publish_open(conn, tenant_id, screen_id)
    log.info("command_created", command_id=str(command.id), screen_id=str(screen_id), type=body.type)
    return json_response(command, status=202)


async def list_commands(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    screen_id = uuid_param(request)
    after, limit = page_params(request)
    status = choice_query(request, "status", COMMAND_STATUSES)
    async with request.app[POOL].acquire() as conn:
        await queries.commands.get_screen_id(conn, tenant_id, screen_id)
        commands = await queries.commands.list_commands(
            conn, tenant_id, screen_id, status=status, after=after, limit=limit
        )
    return json_response(CommandPage(items=commands, next_cursor=next_cursor(commands, limit)))


async def get_command(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    screen_id = uuid_param(request)
    command_id = uuid_param(request, "commandId")
    async with request.app[POOL].acquire() as conn:
        command = await queries.commands.get_command(conn, tenant_id, screen_id, command_id)
    return json_response(command)


async def cancel_command(request: web.Request) -> web.Response:
    principal = principal_of(request)
    tenant_id = principal.tenant_id
    screen_id = uuid_param(request)
    command_id = uuid_param(request, "commandId")
    address = client_address(request, request.app[SETTINGS].trusted_proxies)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        await queries.commands.lock_screen(conn, tenant_id, screen_id)
        command = await queries.commands.get_command(conn, tenant_id, screen_id, command_id, lock=True)
        if command.status not in OPEN_STATUSES:
            raise Conflict(
                f"the command is {command.status} already: only a pending or delivered one is cancelled"
            )
        cancelled = await queries.commands.close_command(conn, command_id, "cancelled")
        assert cancelled is not None  # open, and locked since
        await record_step(conn, tenant_id, cancelled, actor=principal.actor, client_address=address)
        await publish_open(conn, tenant_id, screen_id)
    log.info("command_cancelled", command_id=str(command_id), screen_id=str(screen_id))
    return json_response(cancelled)


async def get_screenshot(request: web.Request) -> web.Response:
    """The image the TV stored for the command (its object's description is its content type)."""
    tenant_id = tenant_of(request)
    screen_id = uuid_param(request)
    command_id = uuid_param(request, "commandId")
    async with request.app[POOL].acquire() as conn:
        await queries.commands.get_command(conn, tenant_id, screen_id, command_id)
    try:
        found = await request.app[SCREENSHOTS].get(screenshot_object(tenant_id, command_id))
    except (
        nats.js.errors.ObjectNotFoundError,
        nats.js.errors.ObjectDeletedError,
        nats.js.errors.NotFoundError,
        # Its chunks gone while its metadata stays (a full store drops its oldest messages).
        nats.js.errors.DigestMismatchError,
        nats.js.errors.BadObjectMetaError,
    ):
        raise NotFound("no screenshot for this command") from None
    described = found.info.description
    return web.Response(
        body=found.data or b"",
        content_type=described if described in SCREENSHOT_TYPES else "application/octet-stream",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-cache"},
    )


async def screenshots_ctx(app: web.Application) -> AsyncIterator[None]:
    app[SCREENSHOTS] = await app[JS].object_store(SCREENSHOTS_BUCKET)
    yield
