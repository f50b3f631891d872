"""The NATS connection, the JetStream topology (streams, KV buckets), and durable event consumers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.object_store import ObjectStore

from shared import trace_context
from shared.app_keys import SERVICE, SETTINGS
from shared.bus_access import inbox_prefix
from shared.dependencies import DEPENDENCIES
from shared.events import AnyEvent, event_decoder
from shared.logging import new_log_context
from shared.projections import (
    DEVICE_COMMANDS_BUCKET,
    DEVICE_FILES_BUCKET,
    DEVICE_KEYS_BUCKET,
    REVOKED_CLIENTS_BUCKET,
    SCREEN_CONTENT_BUCKET,
    SCREENSHOTS_BUCKET,
    kv_stream,
)
from shared.pull import durable_config, pull_batches
from shared.settings import Settings
from shared.tasks import background, finished

log = structlog.get_logger()

NC = web.AppKey("NC", NATS)
JS = web.AppKey("JS", JetStreamContext)
# The object store of files for devices, looked up once (each lookup is a request to NATS).
FILES = web.AppKey("FILES", ObjectStore)

DAY = 24 * 3600
# By name; storage and replicas are the deployment's (see ensure_topology).
STREAMS = {
    # Domain events. The window is long so a relay that retries after an outage is still de-duplicated.
    "EVENTS": api.StreamConfig(
        subjects=["registry.>", "provisioning.>"], max_age=30 * DAY, duplicate_window=600
    ),
    # Limited by age (HEARTBEAT_STREAM_HOURS, which ensure_topology sets): presence is the durable
    # record, the stream a buffer and a tap for monitoring. heartbeat.presence.changed events
    # travel here too (their subject matches; streams can't overlap).
    "HEARTBEATS": api.StreamConfig(subjects=["heartbeat.*.*"], duplicate_window=120),
    # TVs' reports: proof of play and errors, and their word on the commands they were given.
    "DEVICE_EVENTS": api.StreamConfig(
        subjects=["device_events.*.*", "device_commands.*.*"], max_age=7 * DAY, duplicate_window=120
    ),
}
BUCKETS = (DEVICE_KEYS_BUCKET, SCREEN_CONTENT_BUCKET, REVOKED_CLIENTS_BUCKET, DEVICE_COMMANDS_BUCKET)
# Object stores: how long each keeps an object (None: until it is deleted), and its size at most
# (None: the server's limits), past which its oldest messages go.
OBJECT_STORES: dict[str, tuple[float | None, int | None]] = {
    DEVICE_FILES_BUCKET: (None, None),
    # A week of screenshots, 20 GiB at most (each command takes one, of MAX_SCREENSHOT_BYTES).
    SCREENSHOTS_BUCKET: (7 * DAY, 20 * 2**30),
}
# A revocation matters only while a token issued before it could live; past that (and a margin for
# clocks and a relay catching up), the bucket forgets it by itself.
REVOCATION_MARGIN_SECONDS = 300


def bucket_ttl(bucket: str, token_ttl_seconds: int) -> float | None:
    """How long ``bucket`` keeps an entry (None: until it is replaced or deleted)."""
    return token_ttl_seconds + REVOCATION_MARGIN_SECONDS if bucket == REVOKED_CLIENTS_BUCKET else None


class _Client(NATS):
    """nats-py's client, except that an answer to a round trip given up is harmless.

    ``flush()`` sends a PING and waits for its PONG; one given up (its timeout passed, or its caller
    was cancelled: a readiness probe cut off after its 2 s) leaves its cancelled future first in the
    queue of PONGs awaited. nats-py sets the late PONG's result on it regardless, and the
    InvalidStateError ends the connection's read loop for good: the connection still looks
    connected, nothing more is read, every request and publish times out, and ``flush()`` even
    reports success (with no read loop it only writes). nats-py notices only when its own pings go
    unanswered, minutes later. A lagging loop (a gateway loading its keys, a loaded machine) is
    all it takes; a late PONG still proves the connection alive."""

    async def _process_pong(self) -> None:
        if self._pongs:
            future = self._pongs.pop(0)
            if not future.done():
                future.set_result(True)
            self._pongs_received += 1
            self._pings_outstanding = 0


async def connect(settings: Settings, name: str, *, retry_for: float = 30) -> NATS:
    """Connect as the ``NATS_USER`` setting (or ``name``: a service is its own user) to the first
    server of the seed list that answers (the client learns the rest of the cluster from it), retrying for
    ``retry_for`` seconds (NATS may start after us), then giving up with the last attempt's error;
    once connected, reconnect forever."""

    async def disconnected() -> None:
        log.warning("nats_disconnected")

    async def reconnected() -> None:
        log.info("nats_reconnected")

    async def error(exc: Exception) -> None:
        log.warning("nats_error", error=str(exc))

    user = settings.nats_user or name
    credentials: dict[str, Any] = {}
    if settings.nats_password:
        credentials = {"user": user, "password": settings.nats_password, "inbox_prefix": inbox_prefix(user)}
    if settings.nats_tls_ca_file:
        credentials["tls"] = ssl.create_default_context(cafile=settings.nats_tls_ca_file)
    deadline = asyncio.get_running_loop().time() + retry_for
    while True:
        nc = _Client()
        try:
            await nc.connect(
                servers=list(settings.nats_url),
                name=name,
                connect_timeout=2,
                drain_timeout=5,
                max_reconnect_attempts=-1,
                # nats-py sleeps this many seconds (a float is fine) though its hint says int.
                reconnect_time_wait=0.5,  # type: ignore[arg-type]
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
                **credentials,
            )
            return nc
        except (TimeoutError, OSError, nats.errors.NoServersError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def ensure_topology(
    js: JetStreamContext, replicas: int, *, token_ttl_seconds: int, heartbeat_stream_hours: float
) -> None:
    """Create or update every stream and bucket; safe to run from every replica at every start."""
    for name, stream in STREAMS.items():
        config = dataclasses.replace(stream, name=name, storage=api.StorageType.FILE, num_replicas=replicas)
        if name == "HEARTBEATS":
            config.max_age = heartbeat_stream_hours * 3600
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:  # exists with other settings: bring it up to date
            await js.update_stream(config)
    for bucket in BUCKETS:
        try:
            await js.key_value(bucket)
            # The outbox's purge markers age out by a per-message TTL (shared.outbox.purge_kv), which
            # buckets made by nats-py before 2.11's TTLs refuse: allowed on those (it cannot be undone).
            stream = (await js.stream_info(kv_stream(bucket))).config
            if not stream.allow_msg_ttl:
                await js.update_stream(dataclasses.replace(stream, allow_msg_ttl=True))
        except nats.js.errors.BucketNotFoundError:
            await js.create_key_value(
                bucket=bucket,
                history=1,
                replicas=replicas,
                storage=api.StorageType.FILE,
                ttl=bucket_ttl(bucket, token_ttl_seconds),
            )
    for store, (ttl, max_bytes) in OBJECT_STORES.items():
        try:
            await js.object_store(store)
        except nats.js.errors.BucketNotFoundError:
            store_config = api.ObjectStoreConfig(replicas=replicas, storage=api.StorageType.FILE, ttl=ttl)
            await js.create_object_store(store, store_config)
        if max_bytes is not None:
            # nats-py makes object stores refuse what comes past their size (discard new): full,
            # every tenant's upload would fail. The oldest go instead; set on stores made earlier too.
            stream = (await js.stream_info(f"OBJ_{store}")).config
            if stream.max_bytes != max_bytes or stream.discard != api.DiscardPolicy.OLD:
                await js.update_stream(
                    dataclasses.replace(stream, max_bytes=max_bytes, discard=api.DiscardPolicy.OLD)
                )


async def wait_for_topology(js: JetStreamContext) -> None:
    """Until every stream and bucket is there: the setup step makes them, services may not."""
    streams = [
        *STREAMS,
        *(kv_stream(bucket) for bucket in BUCKETS),
        *(f"OBJ_{store}" for store in OBJECT_STORES),
    ]
    while streams:
        try:
            await js.stream_info(streams[0])
            streams.pop(0)
        except nats.js.errors.NotFoundError:
            log.warning(
                "nats_stream_missing", stream=streams[0], hint="run the setup step (python -m services setup)"
            )
            await asyncio.sleep(2)
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("nats_stream_unreachable", stream=streams[0], error=str(exc))
            await asyncio.sleep(0.5)


async def jetstream_ctx(app: web.Application) -> AsyncIterator[None]:
    app[NC] = await connect(app[SETTINGS], app[SERVICE])
    app[JS] = app[NC].jetstream()
    await wait_for_topology(app[JS])
    app[FILES] = await app[JS].object_store(DEVICE_FILES_BUCKET)

    async def answers() -> None:
        if not app[NC].is_connected:  # reconnecting: a round trip would only wait for the timeout
            raise ConnectionError("not connected")
        await app[NC].flush()

    app[DEPENDENCIES].watch("nats", answers, connected=lambda: app[NC].is_connected)
    yield
    app[DEPENDENCIES].forget("nats")
    # drain() lets in-flight publishes and acks finish before the socket closes; with NATS away
    # (reconnecting) there is nothing to drain into, so just close.
    try:
        await app[NC].drain()
    except nats.errors.Error as exc:
        log.warning("nats_drain_failed", error=str(exc))
        with contextlib.suppress(OSError, nats.errors.Error):  # a socket already reset by the server
            await app[NC].close()


EventHandler = Callable[[AnyEvent], Awaitable[None]]
# What a consumer applies: a domain event (``event_decoder``), or another message of the bus with
# a decoder of its own (a TV's command report).
MessageHandler = Callable[[Any], Awaitable[None]]


def consumer_ctx(
    durable: str,
    subjects: list[str],
    make_handler: Callable[[web.Application], MessageHandler],
    *,
    stream: str = "EVENTS",
    decoder: msgspec.json.Decoder[Any] = event_decoder,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Run a durable event consumer for the app's lifetime (see :func:`consume_events`)."""

    async def run(app: web.Application) -> None:
        await consume_events(
            app[JS],
            durable=durable,
            subjects=subjects,
            handle=make_handler(app),
            stream=stream,
            decoder=decoder,
        )

    return background(durable, run)


async def consume_events(
    js: JetStreamContext,
    *,
    durable: str,
    subjects: list[str],
    handle: MessageHandler,
    batch: int = 100,
    stream: str = "EVENTS",
    decoder: msgspec.json.Decoder[Any] = event_decoder,
) -> None:
    """Apply the messages of ``stream`` (decoded by ``decoder``: domain events unless told) with
    one durable consumer shared by every replica of a service.

    A message is acked only after ``handle`` has committed, so a crash redelivers it; ``handle``
    must therefore be idempotent. Undecodable messages are terminated (never redelivered);
    failures are nak'ed with a delay and retried.
    """
    async with contextlib.aclosing(
        pull_batches(js, stream, durable_config(durable, subjects), batch)
    ) as batches:
        async for messages in batches:
            await finished(_apply_all(messages, handle, decoder))


async def _apply_all(messages: list[Msg], handle: MessageHandler, decoder: msgspec.json.Decoder[Any]) -> None:
    for message in messages:
        await _apply(message, handle, decoder)


async def _apply(message: Msg, handle: MessageHandler, decoder: msgspec.json.Decoder[Any]) -> None:
    headers = message.headers or {}
    # Applying the event is a span of the trace that caused it (a new trace when none came).
    span = trace_context.start(headers.get("traceparent"), headers.get("tracestate"))
    new_log_context(
        subject=message.subject,
        request_id=headers.get("X-Request-ID"),
        event_id=headers.get("Nats-Msg-Id"),
        trace_id=span.trace_id,
        span_id=span.span_id,
    )
    try:
        event = decoder.decode(message.data)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        log.error("event_undecodable", error=str(exc))
        await message.term()
        return
    try:
        await handle(event)
    except Exception:
        log.exception("event_failed")
        await message.nak(delay=1)
        return
    await message.ack()
    log.debug("event_applied")
