"""Reads ``HEARTBEATS`` in batches and records presence; acks only after the batch is stored."""

from __future__ import annotations

import asyncio

import msgspec
import nats.errors
import nats.js.errors
import structlog
from aiohttp import web
from nats.js import api

from services.heartbeat import queries
from shared.bus import JS
from shared.db import POOL
from shared.events import heartbeat_decoder

log = structlog.get_logger()

DURABLE = "heartbeat-presence"
BATCH = 500


async def record_presence(app: web.Application) -> None:
    """One durable pull consumer shared by every replica: each batch goes to one of them."""
    js = app[JS]
    config = api.ConsumerConfig(
        durable_name=DURABLE,
        filter_subject="heartbeat.*.*",
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=30,
        max_ack_pending=20_000,
    )
    while True:
        try:
            await js.add_consumer("HEARTBEATS", config)
            subscription = await js.pull_subscribe_bind(durable=DURABLE, stream="HEARTBEATS")
            break
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            log.warning("consumer_setup_failed", durable=DURABLE, error=str(exc))
            await asyncio.sleep(1)
    while True:
        try:
            messages = await subscription.fetch(BATCH, timeout=5)
        except nats.errors.TimeoutError:
            continue
        except nats.errors.Error as exc:
            log.warning("consumer_fetch_failed", durable=DURABLE, error=str(exc))
            await asyncio.sleep(1)
            continue
        heartbeats, good = [], []
        for message in messages:
            try:
                heartbeats.append(heartbeat_decoder.decode(message.data))
                good.append(message)
            except msgspec.DecodeError:
                log.error("heartbeat_undecodable", subject=message.subject)
                await message.term()
        try:
            async with app[POOL].acquire() as conn:
                await queries.record_heartbeats(conn, heartbeats)
        except Exception:
            log.exception("presence_write_failed", batch=len(good))
            for message in good:
                await message.nak(delay=1)
            continue
        await asyncio.gather(*(message.ack() for message in good))
