"""Screens: an admin creates one in a venue (state provisioning, until a device binds to it), lists,
reads and renames them or sets their offline alert delay; binding state and presence arrive as
events (``consumers``)."""

from __future__ import annotations

import msgspec
import structlog
from aiohttp import web

from services.registry import audit, lookup, queries, screen_content
from services.registry.models import NewScreen, ScreenPage, ScreenPatch
from shared import outbox
from shared.app_keys import SETTINGS
from shared.auth import principal_of, tenant_of
from shared.db import POOL
from shared.events import ScreenCreated
from shared.http import json_response, read_json, uuid_param
from shared.pagination import choice_query, next_cursor, page_params, uuid_query

log = structlog.get_logger()

_new_screen = msgspec.json.Decoder(NewScreen)
_screen_patch = msgspec.json.Decoder(ScreenPatch)


async def create_screen(request: web.Request) -> web.Response:
    principal = principal_of(request)
    tenant_id = principal.tenant_id
    body = await read_json(request, _new_screen)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        await queries.venues.get_venue(conn, tenant_id, body.venue_id)
        screen = await queries.screens.insert_screen(conn, tenant_id, body)
        await audit.record(request, conn, tenant_id, principal.actor, "screen.created", screen.id)
        content = await screen_content.publish(conn, screen.id)
        await outbox.add_event(
            conn,
            ScreenCreated(
                tenant_id=tenant_id,
                screen_id=screen.id,
                venue_id=screen.venue_id,
                version=1,  # a new row's version (the column's default)
                config=content.config,
            ),
        )
    log.info("screen_created", screen_id=str(screen.id))
    return json_response(screen, status=201)


async def list_screens(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    after, limit = page_params(request)
    venue_id = uuid_query(request, "venueId")
    state = choice_query(request, "state", ("provisioning", "active"))
    async with request.app[POOL].acquire() as conn:
        screens = await queries.screens.list_screens(
            conn, tenant_id, venue_id=venue_id, state=state, after=after, limit=limit
        )
    return json_response(ScreenPage(items=screens, next_cursor=next_cursor(screens, limit)))


async def get_screen(request: web.Request) -> web.Response:
    return await lookup.by_path_id(request, queries.screens.get_screen)


async def update_screen(request: web.Request) -> web.Response:
    principal = principal_of(request)
    screen_id = uuid_param(request)
    changes = (await read_json(request, _screen_patch)).changes()
    async with request.app[POOL].acquire() as conn, conn.transaction():
        screen = await queries.screens.get_screen(conn, principal.tenant_id, screen_id, lock=True)
        screen = await queries.screens.update_screen(conn, msgspec.structs.replace(screen, **changes))
        if "offline_alert_after_minutes" in changes:
            # An alert pending meanwhile waits for the new delay (the venue's row is locked after
            # the screen's, as everywhere).
            await queries.alerts.lock_venue(conn, screen.venue_id)
            await queries.alerts.reschedule_pending(
                conn, screen.venue_id, request.app[SETTINGS].offline_alert_after_minutes, screen.id
            )
        await audit.record(request, conn, principal.tenant_id, principal.actor, "screen.changed", screen.id)
    return json_response(screen)
