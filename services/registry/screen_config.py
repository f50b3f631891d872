"""A screen's config (sync and heartbeat intervals, cache policy): read, and patched by an admin.
A change bumps the screen's version and is announced (``ScreenConfigChanged``: provisioning's and
the heartbeat service's copies follow) besides the gateway's copy."""

from __future__ import annotations

import msgspec
import structlog
from aiohttp import web

from services.registry import audit, lookup, queries, screen_content
from services.registry.models import ConfigPatch
from shared import outbox
from shared.auth import principal_of
from shared.db import POOL
from shared.events import ScreenConfigChanged
from shared.http import json_response, read_json, uuid_param

log = structlog.get_logger()

_config_patch = msgspec.json.Decoder(ConfigPatch)


async def get_config(request: web.Request) -> web.Response:
    return await lookup.by_path_id(request, queries.screen_config.get_screen_config)


async def update_config(request: web.Request) -> web.Response:
    principal = principal_of(request)
    tenant_id = principal.tenant_id
    screen_id = uuid_param(request)
    patch = await read_json(request, _config_patch)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        config = patch.applied_to(await queries.screen_config.lock_screen_config(conn, tenant_id, screen_id))
        await audit.record(request, conn, tenant_id, principal.actor, "config.changed", screen_id)
        version = await queries.screen_config.update_screen_config(conn, screen_id, config)
        await outbox.add_event(
            conn,
            ScreenConfigChanged(tenant_id=tenant_id, screen_id=screen_id, version=version, config=config),
        )
        await screen_content.publish(conn, screen_id)
    log.info("screen_config_changed", screen_id=str(screen_id), version=version)
    return json_response(config)
