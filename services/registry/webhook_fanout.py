"""The webhook fan-out: each bus event a webhook carries becomes one delivery per endpoint of its
tenant subscribed to its type, queued in registry's database for the dispatcher.

One durable JetStream consumer shared by every replica. A batch of events is queued in one
transaction (a commit each would bound the fan-out at a disk flush per event) and acked only after
it committed, so a crash or a NATS outage loses none, and a redelivered event queues no second
delivery (one per endpoint and event id)."""

from __future__ import annotations

import contextlib

import msgspec
import structlog
from aiohttp import web
from nats.aio.msg import Msg

from services.registry.queries import webhook_deliveries
from services.registry.webhook_events import SOURCE_SUBJECTS, webhook_body, webhook_type
from shared.bus import JS
from shared.db import POOL, pooled
from shared.events import Event, event_decoder
from shared.logging import new_log_context
from shared.pull import durable_config, pull_batches
from shared.tasks import background, finished

log = structlog.get_logger()

FANOUT_DURABLE = "registry-webhooks"
BATCH = 200


async def fan_out(app: web.Application) -> None:
    config = durable_config(FANOUT_DURABLE, SOURCE_SUBJECTS)
    async with contextlib.aclosing(pull_batches(app[JS], "EVENTS", config, BATCH)) as batches:
        async for messages in batches:
            await finished(_queue_batch(app, messages))


async def _queue_batch(app: web.Application, messages: list[Msg]) -> None:
    new_log_context(durable=FANOUT_DURABLE)
    applicable: list[tuple[Msg, Event, str | None]] = []
    for message in messages:
        try:
            event = event_decoder.decode(message.data)
        except msgspec.DecodeError as exc:  # never redelivered: it would fail the same way
            log.error("event_undecodable", subject=message.subject, error=str(exc))
            await message.term()
            continue
        applicable.append((message, event, webhook_type(event)))
    queued = 0
    try:
        async with pooled(app[POOL]) as conn, conn.transaction():
            for message, event, event_type in applicable:
                if event_type is not None:
                    payload = webhook_body(event, event_type)
                    headers = message.headers or {}
                    queued += await webhook_deliveries.queue_event(
                        conn,
                        event.tenant_id,
                        str(event.event_id),
                        event_type,
                        payload,
                        traceparent=headers.get("traceparent"),
                        tracestate=headers.get("tracestate"),
                    )
    except Exception:
        log.exception("webhook_fanout_failed", events=len(applicable))
        for message, _, _ in applicable:
            await message.nak(delay=1)
        return
    for message, _, _ in applicable:
        await message.ack()
    if queued:
        log.info("webhook_deliveries_queued", events=len(applicable), deliveries=queued)


fanout_ctx = background(FANOUT_DURABLE, fan_out)
