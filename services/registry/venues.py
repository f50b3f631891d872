"""Venues: the places a tenant's screens hang in (a screen names its venue), with their opening
hours and offline alert delay (``alerts``)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from services.registry import audit, lookup, queries
from services.registry.models import NewVenue, VenuePage, VenuePatch
from shared.app_keys import SETTINGS
from shared.auth import principal_of, tenant_of
from shared.db import POOL
from shared.http import json_response, read_json, uuid_param
from shared.pagination import next_cursor, page_params

_new_venue = msgspec.json.Decoder(NewVenue)
_venue_patch = msgspec.json.Decoder(VenuePatch)


async def create_venue(request: web.Request) -> web.Response:
    principal = principal_of(request)
    body = await read_json(request, _new_venue)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        venue = await queries.venues.insert_venue(conn, principal.tenant_id, body)
        await audit.record(request, conn, principal.tenant_id, principal.actor, "venue.created", venue.id)
    return json_response(venue, status=201)


async def list_venues(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    after, limit = page_params(request)
    async with request.app[POOL].acquire() as conn:
        venues = await queries.venues.list_venues(conn, tenant_id, after=after, limit=limit)
    return json_response(VenuePage(items=venues, next_cursor=next_cursor(venues, limit)))


async def get_venue(request: web.Request) -> web.Response:
    return await lookup.by_path_id(request, queries.venues.get_venue)


async def update_venue(request: web.Request) -> web.Response:
    principal = principal_of(request)
    venue_id = uuid_param(request)
    patch = await read_json(request, _venue_patch)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        venue = await queries.venues.get_venue(conn, principal.tenant_id, venue_id, lock=True)
        venue = await queries.venues.update_venue(conn, msgspec.structs.replace(venue, **patch.changes()))
        # Screens offline already wait for the delay that applies now.
        await queries.alerts.reschedule_pending(
            conn, venue.id, request.app[SETTINGS].offline_alert_after_minutes
        )
        await audit.record(request, conn, principal.tenant_id, principal.actor, "venue.changed", venue.id)
    return json_response(venue)
