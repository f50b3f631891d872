"""The screens a flow binds to: provisioning's copy of registry's screens, and the two checks every
flow that names a screen makes — the tenant has it, and it is in provisioning (no active device)."""

from __future__ import annotations

import uuid

import aiohttp
import structlog
from aiohttp import web

from services.provisioning import queries
from services.provisioning.queries.screens import ScreenCopy
from shared.app import HTTP
from shared.app_keys import SETTINGS
from shared.db import POOL, Connection
from shared.errors import Conflict, NotFound

log = structlog.get_logger()


async def known_screen(request: web.Request, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> None:
    """404 unless the tenant has this screen: in our copy of screens, or — created a moment ago,
    its event not here yet — at registry."""
    async with request.app[POOL].acquire() as conn:
        if await queries.screens.screen_exists(conn, screen_id, tenant_id):
            return
    if not await _learn_screen_from_registry(request, screen_id, tenant_id):
        raise NotFound("no such screen")


async def _learn_screen_from_registry(
    request: web.Request, screen_id: uuid.UUID, tenant_id: uuid.UUID
) -> bool:
    """Ask registry about a screen our event copy lacks (created a moment ago).

    Registry answers with the caller's own access token, so tenant isolation is registry's as for
    any admin call. The event, when it lands, brings the screen's config (our copy has version 0).
    """
    url = f"{request.app[SETTINGS].registry_url}/v1/screens/{screen_id}"
    headers = {"Authorization": request.headers["Authorization"]}
    try:
        async with request.app[HTTP].get(url, headers=headers) as response:
            if response.status != 200:
                return False
    except (aiohttp.ClientError, TimeoutError):
        log.warning("registry_unreachable", screen_id=str(screen_id))
        return False
    async with request.app[POOL].acquire() as conn:
        await queries.screens.insert_screen_seen_at_registry(conn, screen_id, tenant_id)
    return True


async def lock_free_screen(conn: Connection, tenant_id: uuid.UUID, screen_id: uuid.UUID) -> ScreenCopy:
    """The tenant's screen, locked, with no active device: what an admin may hand to a new device
    (a code, a token, a claim, an approval). 404 if the tenant has no such screen, 409 if a device
    is bound to it."""
    screen = await queries.screens.lock_screen(conn, screen_id, tenant_id=tenant_id)
    if screen is None:
        raise NotFound("no such screen")
    if await queries.screens.screen_has_active_device(conn, screen.id):
        raise Conflict("the screen is not in provisioning: revoke its device first")
    return screen
