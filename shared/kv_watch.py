"""Following a KV bucket into memory: its current values first, then every change, for good."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import msgspec
import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_PURGE

from shared.projections import kv_prefix, kv_stream

log = structlog.get_logger()

# What a watcher does with an entry: its name, and its value (None: deleted, purged or aged out).
Apply = Callable[[str, bytes | None], None]


async def watch_bucket(js: JetStreamContext, bucket: str, apply: Apply, loaded: Callable[[], None]) -> None:
    """Follow ``bucket`` forever: ``apply`` each current value, call ``loaded`` once they are all
    in (at once for an empty bucket; again after a restart of the watch), then ``apply`` every change.

    Our own ordered consumer rather than nats-py's ``KeyValue.watchall``: that one queues every
    entry without bound, so loading a million keys held them all in memory at once, and the
    garbage left the heap fragmented (RSS per key more than twice the entries' size). Applying
    each message in the subscription's callback lets JetStream's flow control pace the load.
    """
    prefix = kv_prefix(bucket)
    pending_load = True

    def mark_loaded() -> None:
        nonlocal pending_load
        if pending_load:
            pending_load = False
            loaded()

    async def on_message(message: Msg) -> None:
        headers = message.headers or {}
        deleted = headers.get("KV-Operation") in (KV_DEL, KV_PURGE) or "Nats-Marker-Reason" in headers
        key = message.subject[len(prefix) :]
        try:
            apply(key, None if deleted else message.data)
        except (ValueError, msgspec.DecodeError) as exc:
            log.error("projection_entry_undecodable", bucket=bucket, key=key, error=str(exc))
        if pending_load and message.metadata.num_pending == 0:
            mark_loaded()

    while True:
        subscription = None
        try:
            subscription = await js.subscribe(
                prefix + ">",
                stream=kv_stream(bucket),
                cb=on_message,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            )
            info = await subscription.consumer_info()
            # The server always reports ``delivered``; were it absent, nothing was delivered yet.
            delivered = info.delivered.consumer_seq if info.delivered is not None else 0
            if info.num_pending == 0 and delivered == 0:  # an empty bucket
                mark_loaded()
            await asyncio.Future()  # the callback does the work until we are cancelled
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("projection_watch_restarting", bucket=bucket, error=str(exc))
            await asyncio.sleep(1)
        finally:
            if subscription is not None:
                with contextlib.suppress(nats.errors.Error):
                    await subscription.unsubscribe()
