"""Following a KV bucket into memory: its current values first, then every change, for good."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import datetime

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
# How often it asks whether the bucket's stream is still the one it follows: one deleted and made
# again (a store lost or restored, an operator) starts its sequence over, below where we resume.
STREAM_CHECK_SECONDS = 5.0
# Between failed attempts to (re)create the consumer: short, NATS is usually back within seconds.
RETRY_SECONDS = (0.1, 0.2, 0.5, 1.0)


async def watch_bucket(
    nc: NATS,
    bucket: str,
    apply: Apply,
    loaded: Callable[[], None],
    held: Callable[[], Iterable[str]] | None = None,
) -> None:
    """Follow ``bucket`` forever: ``apply`` each current value, call ``loaded`` once they are all
    in (at once for an empty bucket), then ``apply`` every change.

    Our own ordered consumer rather than nats-py's ``KeyValue.watchall``: that one queues every
    entry without bound, so loading a million keys held them all in memory at once, and the
    garbage left the heap fragmented (RSS per key more than twice the entries' size). Applying
    each message in the subscription's callback lets JetStream's flow control pace the load.

    After a reconnect the consumer is recreated at once, from the entry after the last one applied
    (not the whole bucket again): a server that restarted no longer has it. When the bucket's
    stream is not the one followed any more (created anew: its sequence started over), the whole
    bucket is loaded again, and then each key ``held`` names (what the caller holds) that the new
    stream does not have is applied as deleted; without ``held``, such keys stay.
    """
    js = nc.jetstream(timeout=API_TIMEOUT_SECONDS)
    prefix = kv_prefix(bucket)
    stream = kv_stream(bucket)
    pending_load = True
    last_applied = 0  # the stream sequence of the last entry applied
    created: datetime | None = None  # when the stream followed was created
    reloading: set[str] | None = None  # while a replaced stream is loaded again: the keys it had

    def mark_loaded() -> None:
        nonlocal pending_load
        if pending_load:
            pending_load = False
            loaded()

    def reloaded() -> None:
        nonlocal reloading
        if reloading is None:
            return
        kept, reloading = reloading, None
        gone = [key for key in held() if key not in kept] if held is not None else []
        for key in gone:
            apply(key, None)
        log.info("projection_reloaded", bucket=bucket, forgotten=len(gone))

    async def on_message(message: Msg) -> None:
        nonlocal last_applied
        headers = message.headers or {}
        deleted = headers.get("KV-Operation") in (KV_DEL, KV_PURGE) or "Nats-Marker-Reason" in headers
        key = message.subject[len(prefix) :]
        if reloading is not None:
            reloading.add(key)
        try:
            apply(key, None if deleted else message.data)
        except (ValueError, msgspec.DecodeError) as exc:
            log.error("projection_entry_undecodable", bucket=bucket, key=key, error=str(exc))
        metadata = message.metadata
        last_applied = metadata.sequence.stream
        if metadata.num_pending == 0:
            mark_loaded()
            reloaded()

    async def replaced() -> bool:
        """The stream is not the one followed: created since, or its sequence below ours."""
        info = await js.stream_info(stream)
        return info.created != created or info.state.last_seq < last_applied

    failures = 0
    while True:
        subscription = None
        try:
            reconnects = nc.stats["reconnects"]
            followed = await js.stream_info(stream)
            if last_applied and (followed.created != created or followed.state.last_seq < last_applied):
                log.warning(
                    "projection_stream_replaced",
                    bucket=bucket,
                    after=last_applied,
                    last=followed.state.last_seq,
                )
                last_applied = 0
                reloading = set()
            created = followed.created
            # Everything after what we hold; the bucket's current values when we hold nothing.
            config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT)
            if last_applied:
                config = api.ConsumerConfig(
                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=last_applied + 1
                )
            subscription = await js.subscribe(
                prefix + ">",
                stream=stream,
                cb=on_message,
                ordered_consumer=True,
                idle_heartbeat=IDLE_HEARTBEAT_SECONDS,
                config=config,
            )
            if pending_load or reloading is not None:
                info = await subscription.consumer_info()
                # The server always reports ``delivered``; were it absent, nothing was delivered yet.
                delivered = info.delivered.consumer_seq if info.delivered is not None else 0
                if info.num_pending == 0 and delivered == 0:  # an empty bucket
                    mark_loaded()
                    reloaded()
            failures = 0
            # nats-py takes one reconnect callback per connection (the connection's own log line);
            # its counter is what a second listener can watch. nats-py recreates its ordered
            # consumer by itself where it left off, which in a replaced stream skips what is new.
            checked = asyncio.get_running_loop().time()
            while nc.stats["reconnects"] == reconnects:
                await asyncio.sleep(RECONNECT_CHECK_SECONDS)
                if asyncio.get_running_loop().time() - checked >= STREAM_CHECK_SECONDS:
                    checked = asyncio.get_running_loop().time()
                    with contextlib.suppress(TimeoutError, nats.errors.Error):
                        if await replaced():
                            break
            log.info("projection_watch_resuming", bucket=bucket, after=last_applied)
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("projection_watch_restarting", bucket=bucket, error=str(exc))
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
            failures += 1
        finally:
            if subscription is not None:
                with contextlib.suppress(nats.errors.Error):
                    await subscription.unsubscribe()
