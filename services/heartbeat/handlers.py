"""Fleet monitoring for a tenant's admins: how many screens are up, and each screen's presence."""

from __future__ import annotations

from aiohttp import web

from services.heartbeat import history, queries
from services.heartbeat.models import HeartbeatPage
from shared.app_keys import SETTINGS
from shared.auth import tenant_of
from shared.db import POOL
from shared.errors import NotFound
from shared.http import json_response, uuid_param
from shared.pagination import datetime_query, page_limit


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


async def get_heartbeats(request: web.Request) -> web.Response:
    """The screen's heartbeats after ``since`` (oldest first), as long as they are kept."""
    tenant_id = tenant_of(request)
    screen_id = uuid_param(request)
    since = datetime_query(request, "since")
    limit = page_limit(request)
    async with request.app[POOL].acquire() as conn:
        if not await queries.tenant_has_screen(conn, tenant_id, screen_id):
            raise NotFound("no such screen")
        items = await history.heartbeat_history(
            conn,
            tenant_id,
            screen_id,
            since=since,
            limit=limit,
            retention_hours=request.app[SETTINGS].heartbeat_retention_hours,
        )
    next_since = items[-1].received_at if len(items) == limit else None
    return json_response(HeartbeatPage(items=items, next_since=next_since))
