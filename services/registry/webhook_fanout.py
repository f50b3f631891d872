"""The webhook fan-out: each bus event a webhook carries becomes one delivery per endpoint of its
tenant subscribed to its type, queued in registry's database for the dispatcher.

One durable JetStream consumer shared by every replica; an event is acked only after its
deliveries committed, so a crash or a NATS outage loses none, and a redelivered event queues no
second delivery (one per endpoint and event id)."""

from __future__ import annotations

import structlog
from aiohttp import web

from services.registry.queries import webhook_deliveries
from services.registry.webhook_events import SOURCE_SUBJECTS, webhook_body, webhook_type
from shared.bus import EventHandler, consumer_ctx
from shared.db import POOL
from shared.events import AnyEvent

log = structlog.get_logger()

FANOUT_DURABLE = "registry-webhooks"


def fanout_handler(app: web.Application) -> EventHandler:
    async def handle(event: AnyEvent) -> None:
        event_type = webhook_type(event)
        if event_type is None:
            return
        payload = webhook_body(event, event_type)
        async with app[POOL].acquire() as conn, conn.transaction():
            queued = await webhook_deliveries.queue_event(
                conn, event.tenant_id, str(event.event_id), event_type, payload
            )
        if queued:
            log.info("webhook_deliveries_queued", webhook_type=event_type, deliveries=queued)

    return handle


fanout_ctx = consumer_ctx(FANOUT_DURABLE, SOURCE_SUBJECTS, fanout_handler)
