"""Provisioning: binds devices to screens and ends those bindings; holds devices and their keys
(as hashes).

Each way of binding is a feature — a handlers module and its SQL in ``queries/`` of the same name:
``codes`` (pairing codes), ``tokens``, ``serials``, ``claims``, ``device_authorization`` and
``recovery``; ``devices`` is the admins' view (list, revoke, audit). What they share is the core:
``screens`` (the screen copy, a free screen locked), ``attempts`` (the rate limit on guessable
proofs) and ``binding`` (the one place every bind and unbind goes through).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web

from services.provisioning import binding, device_authorization, queries
from services.provisioning.consumers import screens_ctx
from services.provisioning.routes import OPERATIONS
from shared import bus, db, outbox
from shared.app import base_app, http_client_ctx
from shared.app_keys import SETTINGS
from shared.auth import VERIFIER, TokenVerifier
from shared.db import POOL, Connection
from shared.http import add_routes
from shared.openapi import add_operations
from shared.revocations import revocations_ctx
from shared.routing import DEVICE_TOKEN_PATH
from shared.settings import Settings
from shared.tasks import background

log = structlog.get_logger()

SCHEMA = "provisioning"
MIGRATIONS = (db.OUTBOX_MIGRATIONS, Path(__file__).parent / "migrations")


def create_app(settings: Settings) -> web.Application:
    app = base_app("provisioning", settings)
    app[VERIFIER] = TokenVerifier(settings)
    app.cleanup_ctx.append(db.pool_ctx(SCHEMA, MIGRATIONS))
    app.cleanup_ctx.append(bus.jetstream_ctx)
    app.cleanup_ctx.append(revocations_ctx)
    app.cleanup_ctx.append(outbox.relay_ctx(SCHEMA))
    app.cleanup_ctx.append(screens_ctx)
    app.cleanup_ctx.append(http_client_ctx)
    app.cleanup_ctx.append(background("prune", prune))
    # Not public (no route of the Ingress leads here): registry's /oauth/token passes the
    # device-code grant on to it, so the token endpoint stays one URL (RFC 8414 metadata).
    add_routes(app, [("POST", DEVICE_TOKEN_PATH, device_authorization.poll, True)])
    add_operations(app, "Signage provisioning", OPERATIONS)
    return app


# Rows one delete takes: a round of pruning never holds many row locks at once.
PRUNE_BATCH = 1000


async def prune(app: web.Application) -> None:
    """Forget budgets of windows past, and expired requests, codes and tokens that bound nothing,
    once a window: the tables stay as small as the live traffic, whatever an attacker stored. And
    revoked keys past their retention, so the gateways' memory follows the live fleet. Every
    replica runs it; batches of different replicas never overlap."""
    settings = app[SETTINGS]
    window, kept = settings.register_failure_window_seconds, settings.prune_expired_after_seconds
    keys_kept = settings.revoked_key_retention_hours * 3600
    while True:
        await asyncio.sleep(window)
        try:
            async with app[POOL].acquire() as conn:
                await prune_once(conn, window, kept)
                await forget_revoked_keys(conn, keys_kept)
        except Exception as exc:  # noqa: BLE001 - the next round tries again; pruning is housekeeping
            log.warning("prune_failed", error=str(exc))


async def prune_once(conn: Connection, window_seconds: int, kept_seconds: int) -> int:
    """One round, batch after batch until none comes back full; returns the rows deleted."""
    deleted = 0
    steps: list[Callable[[], Awaitable[int]]] = [
        functools.partial(queries.pruning.prune_budgets, conn, window_seconds, PRUNE_BATCH),
        *(
            functools.partial(queries.pruning.prune_expired, conn, table, kept_seconds, PRUNE_BATCH)
            for table in queries.pruning.EXPIRING
        ),
    ]
    for step in steps:
        while True:
            count = await step()
            deleted += count
            if count < PRUNE_BATCH:
                break
    return deleted


async def forget_revoked_keys(conn: Connection, kept_seconds: float) -> int:
    """Revoked keys past their retention, a transaction a batch; returns how many went."""
    forgotten = 0
    while True:
        count = await binding.forget_revoked_keys(conn, kept_seconds, PRUNE_BATCH)
        forgotten += count
        if count < PRUNE_BATCH:
            if forgotten:
                log.info("revoked_keys_forgotten", keys=forgotten)
            return forgotten
