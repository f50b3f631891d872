"""Following a KV bucket into memory: its current values first, then every change, for good."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api
from nats.js.kv import KV_DEL, KV_PURGE

from shared.projections import kv_prefix, kv_stream

log = structlog.get_logger()

# What a watcher does with an entry: its name, and its value (None: deleted, purged or aged out).
Apply = Callable[[str, bytes | None], None]

# The server's ordered consumer lives on one node and in memory: a node that dies or restarts takes
# it along, silently. nats-py notices by missing idle heartbeats (two intervals, checked every two)
# and recreates it where we left off; at nats-py's default of 5 s that took 10 to 20 s, the time a
# revoke went unenforced after every bus fault. At 1 s: 2 to 4 s after the last sign of life.
IDLE_HEARTBEAT_SECONDS = 1.0
# For creating the consumer: the server answers in milliseconds, or not at all while it recovers or
# a leader is being elected; then we ask again rather than wait nats-py's 5 s for nothing.
API_TIMEOUT_SECONDS = 2.0
# How often the watch looks whether the connection came back from a reconnect (a local counter).
RECONNECT_CHECK_SECONDS = 0.1
# Between failed attempts to (re)create the consumer: short, NATS is usually back within seconds.
RETRY_SECONDS = (0.1, 0.2, 0.5, 1.0)


async def watch_bucket(nc: NATS, bucket: str, apply: Apply, loaded: Callable[[], None]) -> None:
    """Follow ``bucket`` forever: ``apply`` each current value, call ``loaded`` once they are all
    in (at once for an empty bucket), then ``apply`` every change.

    Our own ordered consumer rather than nats-py's ``KeyValue.watchall``: that one queues every
    entry without bound, so loading a million keys held them all in memory at once, and the
    garbage left the heap fragmented (RSS per key more than twice the entries' size). Applying
    each message in the subscription's callback lets JetStream's flow control pace the load.

    After a reconnect the consumer is recreated at once, from the entry after the last one applied
    (not the whole bucket again): a server that restarted no longer has it.
    """
    js = nc.jetstream(timeout=API_TIMEOUT_SECONDS)
    prefix = kv_prefix(bucket)
    pending_load = True
    last_applied = 0  # the stream sequence of the last entry applied

    def mark_loaded() -> None:
        nonlocal pending_load
        if pending_load:
            pending_load = False
            loaded()

    async def on_message(message: Msg) -> None:
        nonlocal last_applied
        headers = message.headers or {}
        deleted = headers.get("KV-Operation") in (KV_DEL, KV_PURGE) or "Nats-Marker-Reason" in headers
        key = message.subject[len(prefix) :]
        try:
            apply(key, None if deleted else message.data)
        except (ValueError, msgspec.DecodeError) as exc:
            log.error("projection_entry_undecodable", bucket=bucket, key=key, error=str(exc))
        metadata = message.metadata
        last_applied = metadata.sequence.stream
        if pending_load and metadata.num_pending == 0:
            mark_loaded()

    failures = 0
    while True:
        subscription = None
        try:
            reconnects = nc.stats["reconnects"]
            # Everything after what we hold; the bucket's current values when we hold nothing.
            config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT)
            if last_applied:
                config = api.ConsumerConfig(
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=last_applied + 1
                )
            subscription = await js.subscribe(
                prefix + ">",
                stream=kv_stream(bucket),
                cb=on_message,
                ordered_consumer=True,
                idle_heartbeat=IDLE_HEARTBEAT_SECONDS,
                config=config,
            )
            if pending_load:
                info = await subscription.consumer_info()
                # The server always reports ``delivered``; were it absent, nothing was delivered yet.
                delivered = info.delivered.consumer_seq if info.delivered is not None else 0
                if info.num_pending == 0 and delivered == 0:  # an empty bucket
                    mark_loaded()
            failures = 0
            # nats-py takes one reconnect callback per connection (the connection's own log line);
            # its counter is what a second listener can watch.
            while nc.stats["reconnects"] == reconnects:  # noqa: ASYNC110 - see above
                await asyncio.sleep(RECONNECT_CHECK_SECONDS)
            log.info("projection_watch_resuming", bucket=bucket, after=last_applied)
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("projection_watch_restarting", bucket=bucket, error=str(exc))
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
            failures += 1
        finally:
            if subscription is not None:
                with contextlib.suppress(nats.errors.Error):
                    await subscription.unsubscribe()
