"""Device gateway: the API of the TVs, answered from in-memory projections of the KV buckets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import prometheus_client
import structlog
from aiohttp import web

from services.device_gateway.acks import Acks
from services.device_gateway.admission import ACKS, ADMISSION, Admission
from services.device_gateway.commands import send_delivery_reports
from services.device_gateway.commands_projection import COMMANDS, OpenCommands, commands_ctx
from services.device_gateway.devices import PROJECTIONS
from services.device_gateway.projections import Projections
from services.device_gateway.routes import OPERATIONS
from services.device_gateway.waits import WAITING, WAITS, Waits
from shared import bus
from shared.app import base_app
from shared.app_keys import READINESS
from shared.bus import NC
from shared.direct_routes import route_directly
from shared.openapi import add_operations
from shared.projections import DEVICE_KEYS_BUCKET, SCREEN_CONTENT_BUCKET
from shared.settings import Settings
from shared.tasks import background, stop

log = structlog.get_logger()

# Every worker holds the same entries, so the pod's figure is the max.
CACHED = prometheus_client.Gauge(
    "gateway_cached_entries", "Entries in this worker's projections", ["bucket"], multiprocess_mode="max"
)


def create_app(settings: Settings) -> web.Application:
    app = base_app("device-gateway", settings)
    app[WAITS] = Waits(limit=settings.gateway_max_waiting, max_seconds=settings.device_wait_max_seconds)
    app[PROJECTIONS] = Projections(app[WAITS])
    app[COMMANDS] = OpenCommands(app[WAITS])
    app[ADMISSION] = Admission(
        max_lag_ms=settings.gateway_max_lag_ms,
        max_pending=settings.gateway_max_pending_reports,
        max_downloads_per_device=settings.gateway_max_downloads_per_device,
    )
    app[ACKS] = Acks()
    app.cleanup_ctx.append(background("count-cached", count_cached))
    app.cleanup_ctx.append(bus.jetstream_ctx)
    app.cleanup_ctx.append(acks_ctx)
    app.cleanup_ctx.append(projections_ctx)
    app.cleanup_ctx.append(commands_ctx)
    # Measured from when the projections are in: loading a large bucket holds the loop (that is
    # no overload, nobody is served yet), and a lag measured then would shed the first TVs served.
    app.cleanup_ctx.append(background("measure-lag", lambda app: app[ADMISSION].measure_lag()))
    app.cleanup_ctx.append(background("command-deliveries", send_delivery_reports))
    # A stop answers the held polls (304) at once, so they do not hold up the drain; the TVs ask
    # again, of another replica. shared/serve.py sends this after the port has closed.
    app.on_shutdown.append(stop_waiting)
    add_operations(app, "Signage device gateway", OPERATIONS)
    route_directly(app)  # the polls and reports skip the router (shared/direct_routes.py)
    return app


async def acks_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[ACKS].start(app[NC])
    yield
    await app[ACKS].stop()


async def stop_waiting(app: web.Application) -> None:
    app[WAITS].wake_all()


async def projections_ctx(app: web.Application) -> AsyncIterator[None]:
    projections = app[PROJECTIONS]
    watchers = [
        asyncio.create_task(projections.watch(app[NC], bucket), name=f"watch-{bucket}")
        for bucket in (DEVICE_KEYS_BUCKET, SCREEN_CONTENT_BUCKET)
    ]

    async def projections_loaded() -> bool:
        # Not ready before the buckets are loaded: a fresh replica would answer 401 to every TV.
        return projections.ready and app[COMMANDS].loaded.is_set()

    app[READINESS]["projections"] = projections_loaded
    # The port opens only after this: a worker sharing it (SO_REUSEPORT) gets no TV before it
    # knows every key, and a restart causes no storm of false 401s.
    waited = asyncio.create_task(projections.wait_ready())
    while not waited.done():
        done, _ = await asyncio.wait([waited, *watchers], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        for task in done & set(watchers):
            task.result()  # watchers run forever: one that ended failed, and so does the start-up
        if not done:
            log.info("waiting_for_buckets", keys=len(projections.keys), screens=len(projections.screens))
    yield
    for task in watchers:
        await stop(task)


async def count_cached(app: web.Application) -> None:
    """Every 5 s, not per entry or request: a million-key load should not pay a metric update per
    key, nor a poll one per wait (and multiprocess metrics cannot read a callback at scrape time)."""
    projections, waits = app[PROJECTIONS], app[WAITS]
    while True:
        CACHED.labels("keys").set(len(projections.keys))
        CACHED.labels("screens").set(len(projections.screens))
        WAITING.set(waits.count)
        await asyncio.sleep(5)
