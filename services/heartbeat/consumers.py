"""Reads ``HEARTBEATS`` in batches and records presence; acks only after the batch is stored."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import structlog
from aiohttp import web
from nats.aio.msg import Msg
from nats.js import api

from services.heartbeat import queries
from shared.bus import JS, pull_batches
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
    async with contextlib.aclosing(pull_batches(js, "HEARTBEATS", config, BATCH)) as batches:
        async for messages in batches:
            await _record(app, messages)


async def _record(app: web.Application, messages: list[Msg]) -> None:
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
        await asyncio.gather(*(message.nak(delay=1) for message in good))
        return
    await asyncio.gather(*(message.ack() for message in good))
