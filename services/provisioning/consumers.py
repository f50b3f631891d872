"""Events provisioning applies to its copy of screens: creation and config changes in registry."""

from __future__ import annotations

import structlog
from aiohttp import web

from services.provisioning import queries
from shared.bus import EventHandler, consumer_ctx
from shared.db import POOL
from shared.events import AnyEvent, ScreenConfigChanged, ScreenCreated

log = structlog.get_logger()


def screens_handler(app: web.Application) -> EventHandler:
    async def handle(event: AnyEvent) -> None:
        match event:
            case ScreenCreated() | ScreenConfigChanged():
                async with app[POOL].acquire() as conn:
                    applied = await queries.screens.upsert_screen(conn, event)
                log.info("screen_copy_updated", screen_id=str(event.screen_id), applied=applied)

    return handle


screens_ctx = consumer_ctx(
    "provisioning-screens",
    ["registry.screen.created", "registry.screen.config_changed"],
    screens_handler,
)
