"""Events registry applies to its screens: binding changes (provisioning) and presence (heartbeat)."""

from __future__ import annotations

import structlog
from aiohttp import web

from services.registry import queries
from shared.bus import EventHandler, consumer_ctx
from shared.db import POOL
from shared.events import AnyEvent, DeviceBound, DeviceRevoked, PresenceChanged

log = structlog.get_logger()


def binding_handler(app: web.Application) -> EventHandler:
    async def handle(event: AnyEvent) -> None:
        async with app[POOL].acquire() as conn:
            match event:
                case DeviceBound():
                    applied = await queries.screens.apply_device_bound(conn, event)
                case DeviceRevoked():
                    applied = await queries.screens.apply_device_revoked(conn, event)
                case _:
                    return
        log.info("screen_binding_applied", screen_id=str(event.screen_id), applied=applied)

    return handle


binding_ctx = consumer_ctx(
    "registry-binding",
    ["provisioning.device.bound", "provisioning.device.revoked"],
    binding_handler,
)


def presence_handler(app: web.Application) -> EventHandler:
    async def handle(event: AnyEvent) -> None:
        if isinstance(event, PresenceChanged):
            async with app[POOL].acquire() as conn:
                await queries.screens.apply_presence_changed(conn, event)

    return handle


# Presence events travel on HEARTBEATS (their subject matches its heartbeat.*.*).
presence_ctx = consumer_ctx(
    "registry-presence", ["heartbeat.presence.changed"], presence_handler, stream="HEARTBEATS"
)
