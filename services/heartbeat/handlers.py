"""Fleet monitoring for a tenant's admins: how many screens are up, and each screen's presence."""

from __future__ import annotations

from aiohttp import web

from services.heartbeat import queries
from shared.auth import tenant_of
from shared.db import POOL
from shared.errors import NotFound
from shared.web import json_response, uuid_param


async def get_fleet_status(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    async with request.app[POOL].acquire() as conn:
        status = await queries.fleet_status(conn, tenant_id)
    return json_response(status)


async def get_screen_presence(request: web.Request) -> web.Response:
    tenant_id = tenant_of(request)
    async with request.app[POOL].acquire() as conn:
        presence = await queries.screen_presence(conn, tenant_id, uuid_param(request))
    if presence is None:
        raise NotFound("no such screen")
    return json_response(presence)
