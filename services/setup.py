"""Everything a deployment needs before its services start, in one idempotent step: each schema's
migrations, then NATS's streams and KV buckets. The Kubernetes Job, compose's one-off service and
``make run`` all run it; running it again (every rollout) changes nothing that is already there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from services.heartbeat.app import MIGRATIONS as HEARTBEAT_MIGRATIONS
from services.provisioning.app import MIGRATIONS as PROVISIONING_MIGRATIONS
from services.registry.app import MIGRATIONS as REGISTRY_MIGRATIONS
from shared import bus, db
from shared.bus_access import SETUP_USER
from shared.settings import Settings

log = structlog.get_logger()

# Schema → its migration folders (the device gateway has no tables).
MIGRATIONS: dict[str, tuple[Path, ...]] = {
    "registry": REGISTRY_MIGRATIONS,
    "provisioning": PROVISIONING_MIGRATIONS,
    "heartbeat": HEARTBEAT_MIGRATIONS,
}


async def migrate(dsn: str) -> None:
    await db.wait_for_database(dsn, timeout=120)
    for schema, folders in MIGRATIONS.items():
        applied = await db.migrate(dsn, schema, *folders)
        log.info("schema_ready", schema=schema, applied=applied)


async def setup(settings: Settings) -> None:
    if not settings.database_url:
        raise SystemExit("missing setting: DATABASE_URL")
    await migrate(settings.database_url)
    nc = await bus.connect(settings, SETUP_USER, retry_for=120)
    try:
        await bus.ensure_topology(
            nc.jetstream(),
            settings.nats_replicas,
            token_ttl_seconds=settings.token_ttl_seconds,
            heartbeat_stream_hours=settings.heartbeat_stream_hours,
        )
        log.info(
            "nats_ready",
            streams=list(bus.STREAMS),
            buckets=list(bus.BUCKETS),
            replicas=settings.nats_replicas,
        )
    finally:
        await nc.close()


def main(settings: Settings) -> None:
    asyncio.run(setup(settings))
