"""Events registry applies to its screens: binding changes (provisioning) and presence (heartbeat),
with the screens' offline alerts they open and close (``alerts``) in the same transaction."""

from __future__ import annotations

import structlog
from aiohttp import web

from services.registry import alerts, queries
from shared.app_keys import SETTINGS
from shared.bus import EventHandler, consumer_ctx
from shared.db import POOL
from shared.events import AnyEvent, DeviceBound, DeviceRevoked, PresenceChanged

log = structlog.get_logger()


def binding_handler(app: web.Application) -> EventHandler:
    async def handle(event: AnyEvent) -> None:
        async with app[POOL].acquire() as conn, conn.transaction():
            match event:
                case DeviceBound():
                    applied = await queries.screens.apply_device_bound(conn, event)
                case DeviceRevoked():
                    applied = await queries.screens.apply_device_revoked(conn, event)
                    if applied:
                        await alerts.screen_unpaired(conn, event.screen_id)
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
            async with app[POOL].acquire() as conn, conn.transaction():
                if await queries.screens.apply_presence_changed(conn, event):
                    await alerts.presence_changed(conn, event, app[SETTINGS])

    return handle


# Presence events travel on HEARTBEATS (their subject matches its heartbeat.*.*).
presence_ctx = consumer_ctx(
    "registry-presence", ["heartbeat.presence.changed"], presence_handler, stream="HEARTBEATS"
)
