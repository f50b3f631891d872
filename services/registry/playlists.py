"""A screen's playlist: read, and replaced whole by an admin (the gateway's copy follows)."""

from __future__ import annotations

import msgspec
import structlog
from aiohttp import web

from services.registry import audit, lookup, queries, screen_content
from services.registry.models import NewPlaylist
from shared.auth import principal_of
from shared.db import POOL
from shared.http import json_response, read_json, uuid_param

log = structlog.get_logger()

_new_playlist = msgspec.json.Decoder(NewPlaylist)


async def get_playlist(request: web.Request) -> web.Response:
    return await lookup.by_path_id(request, queries.playlists.get_playlist)


async def replace_playlist(request: web.Request) -> web.Response:
    principal = principal_of(request)
    tenant_id = principal.tenant_id
    screen_id = uuid_param(request)
    body = await read_json(request, _new_playlist)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        playlist = await queries.playlists.replace_playlist(conn, tenant_id, screen_id, body.items)
        await audit.record(request, conn, tenant_id, principal.actor, "playlist.replaced", screen_id)
        await screen_content.publish(conn, screen_id)
    log.info("playlist_replaced", screen_id=str(screen_id), version=playlist.version)
    return json_response(playlist)
