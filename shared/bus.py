"""The NATS connection, the JetStream topology (streams, KV buckets), and durable event consumers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence

import msgspec
import nats
import nats.errors
import nats.js.errors
import prometheus_client
import structlog
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.object_store import ObjectStore

from shared.app_keys import SERVICE, SETTINGS
from shared.dependencies import DEPENDENCIES
from shared.events import AnyEvent, event_decoder
from shared.logging import new_log_context
from shared.projections import (
    DEVICE_FILES_BUCKET,
    DEVICE_KEYS_BUCKET,
    REVOKED_CLIENTS_BUCKET,
    SCREEN_CONTENT_BUCKET,
)
from shared.tasks import background, finished

log = structlog.get_logger()

CONSUMER_PENDING = prometheus_client.Gauge(
    "consumer_pending_messages",
    "Messages of a durable consumer's stream not yet delivered to it, as of its last batch",
    ["durable"],
    multiprocess_mode="max",
)

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
    # Limited by age: presence is the durable record; the stream is a buffer and a tap for monitoring.
    # heartbeat.presence.changed events travel here too (their subject matches; streams can't overlap).
    "HEARTBEATS": api.StreamConfig(subjects=["heartbeat.*.*"], max_age=DAY, duplicate_window=120),
    "DEVICE_EVENTS": api.StreamConfig(subjects=["device_events.*.*"], max_age=7 * DAY, duplicate_window=120),
}
BUCKETS = (DEVICE_KEYS_BUCKET, SCREEN_CONTENT_BUCKET, REVOKED_CLIENTS_BUCKET)
# A revocation matters only while a token issued before it could live; past that (and a margin for
# clocks and a relay catching up), the bucket forgets it by itself.
REVOCATION_MARGIN_SECONDS = 300


def bucket_ttl(bucket: str, token_ttl_seconds: int) -> float | None:
    """How long ``bucket`` keeps an entry (None: until it is replaced or deleted)."""
    return token_ttl_seconds + REVOCATION_MARGIN_SECONDS if bucket == REVOKED_CLIENTS_BUCKET else None


async def connect(servers: Sequence[str], name: str, *, retry_for: float = 30) -> NATS:
    """Connect to the first of ``servers`` that answers (a seed list: the client learns the rest of the
    cluster from it), retrying for ``retry_for`` seconds (NATS may start after us), then giving up with
    the last attempt's error; once connected, reconnect forever."""

    async def disconnected() -> None:
        log.warning("nats_disconnected")

    async def reconnected() -> None:
        log.info("nats_reconnected")

    async def error(exc: Exception) -> None:
        log.warning("nats_error", error=str(exc))

    deadline = asyncio.get_running_loop().time() + retry_for
    while True:
        try:
            return await nats.connect(
                servers=list(servers),
                name=name,
                connect_timeout=2,
                drain_timeout=5,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
            )
        except (TimeoutError, OSError, nats.errors.NoServersError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def ensure_topology(js: JetStreamContext, replicas: int, *, token_ttl_seconds: int) -> None:
    """Create or update every stream and bucket; safe to run from every replica at every start."""
    for name, stream in STREAMS.items():
        config = dataclasses.replace(stream, name=name, storage=api.StorageType.FILE, num_replicas=replicas)
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:  # exists with other settings: bring it up to date
            await js.update_stream(config)
    for bucket in BUCKETS:
        try:
            await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            await js.create_key_value(
                bucket=bucket,
                history=1,
                replicas=replicas,
                storage=api.StorageType.FILE,
                ttl=bucket_ttl(bucket, token_ttl_seconds),
            )
    try:
        await js.object_store(DEVICE_FILES_BUCKET)
    except nats.js.errors.BucketNotFoundError:
        await js.create_object_store(
            DEVICE_FILES_BUCKET, api.ObjectStoreConfig(replicas=replicas, storage=api.StorageType.FILE)
        )


async def jetstream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[NC] = await connect(settings.nats_url, app[SERVICE])
    app[JS] = app[NC].jetstream()
    await ensure_topology(app[JS], settings.nats_replicas, token_ttl_seconds=settings.token_ttl_seconds)
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
        await app[NC].close()


EventHandler = Callable[[AnyEvent], Awaitable[None]]


def consumer_ctx(
    durable: str,
    subjects: list[str],
    make_handler: Callable[[web.Application], EventHandler],
    *,
    stream: str = "EVENTS",
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Run a durable event consumer for the app's lifetime (see :func:`consume_events`)."""

    async def run(app: web.Application) -> None:
        await consume_events(
            app[JS], durable=durable, subjects=subjects, handle=make_handler(app), stream=stream
        )

    return background(durable, run)


async def pull_batches(
    js: JetStreamContext, stream: str, config: api.ConsumerConfig, batch: int
) -> AsyncGenerator[list[Msg], None]:
    """Batches from a durable pull consumer (created or updated here), forever.

    Every replica of a service pulls from the same durable consumer, so each message goes to one
    of them. Use under ``contextlib.aclosing`` so the subscription ends with the caller.
    """
    durable = config.durable_name
    while True:
        try:
            await js.add_consumer(stream, config)
            subscription = await js.pull_subscribe_bind(durable=durable, stream=stream)
            break
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("consumer_setup_failed", durable=durable, error=str(exc))
            await asyncio.sleep(1)
    fetches = _Fetches(subscription)
    held: list[Msg] = []  # fetched, not yet handed to the caller
    try:
        while True:
            try:
                # nats-py's fetch(n) waits until n messages came or the timeout passed, so a quiet
                # stream would delay each message by the whole timeout. Wait for one, then take
                # what else is there within a moment.
                held = await fetches.fetch(1, wait=5)
                if batch > 1:
                    with contextlib.suppress(asyncio.TimeoutError):
                        held += await fetches.fetch(batch - 1, wait=0.05)
            except TimeoutError:
                # nats-py raises its own TimeoutError, and on some paths (a busy loop that
                # overran the deadline) the builtin one: both mean "nothing yet".
                continue
            except nats.errors.Error as exc:
                log.warning("consumer_fetch_failed", durable=durable, error=str(exc))
                await asyncio.sleep(1)
                continue
            messages, held = held, []
            CONSUMER_PENDING.labels(durable).set(messages[-1].metadata.num_pending)
            yield messages
    finally:
        # Shielded like a batch in hand: a stop cancels again while the hand-back is under way.
        await finished(_close(subscription, fetches, held))


def _end_of_request(subscription: JetStreamContext.PullSubscription, batch: int) -> Msg:
    """A status that makes a fetch of ``batch`` return at once, with what it has (see _Fetches).

    A batch fetch returns its messages on the status the server sends when a pull request expires
    (408). A fetch of one retries on that until its own timeout, but gives up on an error status
    (it holds no message when it reads a status, so it loses none): for it, "unavailable" (503).
    """
    status = api.StatusCode.REQUEST_TIMEOUT if batch > 1 else api.StatusCode.SERVICE_UNAVAILABLE
    headers = {api.Header.STATUS.value: status.value}
    return Msg(_client=subscription._sub._conn, headers=headers)  # noqa: SLF001 - see _close


class _Fetches:
    """nats-py's fetches on one pull subscription, each run to its end, never cancelled.

    A fetch takes messages off the subscription's queue before it returns them: into a list of its
    own while it waits for more (a batch), or in an inner task whose result is dropped when the
    caller's cancel comes at the same moment. A fetch cancelled there loses those messages: no
    longer queued, never returned, so a stop cannot hand them back and they wait out the ack wait
    (a stopping heartbeat service left one message that way). So a fetch runs as a task of its own
    that a cancel of the caller leaves alone, and the stop ends it with :meth:`end`.
    """

    def __init__(self, subscription: JetStreamContext.PullSubscription) -> None:
        self._subscription = subscription
        self._cut_off: asyncio.Task[list[Msg]] | None = None  # the last fetch, until returned
        self._batch = 1  # of that fetch

    async def fetch(self, batch: int, wait: float) -> list[Msg]:
        self._cut_off = asyncio.ensure_future(self._subscription.fetch(batch, timeout=wait))
        self._batch = batch
        messages = await asyncio.shield(self._cut_off)
        self._cut_off = None
        return messages

    async def end(self) -> list[Msg]:
        """What the fetch a stop cut off brought, once it has returned.

        For after the unsubscribe on the wire: then nothing comes behind an end-of-request status
        put on the subscription's queue, and the fetch, reaching it, returns at once what it has
        instead of waiting for its own timeout (up to 5 s for a message that will not come)."""
        task, self._cut_off = self._cut_off, None
        if task is None:
            return []
        queue = self._subscription._sub._pending_queue  # noqa: SLF001 - see _close
        while not task.done():
            if queue.empty():  # a fetch that starts now drops the statuses it finds: put another
                queue.put_nowait(_end_of_request(self._subscription, self._batch))
            await asyncio.wait([task], timeout=0.05)
        if task.cancelled() or task.exception() is not None:
            return []
        return task.result()


async def _close(subscription: JetStreamContext.PullSubscription, fetches: _Fetches, held: list[Msg]) -> None:
    """End the subscription at a stop and hand back at once (nak: to another replica, or to the
    next start) what it holds unhandled, instead of leaving it to wait out the ack wait (30 s).

    Unhandled are the messages the stop came between (fetched, not yet a batch), those of a fetch
    the stop cut off, those a batch fetch's pull request brought after the fetch had returned
    (nats-py queues them for the next fetch), and those on their way to our open pull requests.
    So: unsubscribe on the wire (the server drops our pull requests; an open one would also hold up
    drain() until it expired), a round trip (all sent before it is here), let the cut-off fetch
    return, hand back, then forget the subscription. nats-py's own ``unsubscribe`` drops what
    arrives after it, and has no public way to read its queue.
    """
    sub = subscription._sub  # noqa: SLF001 - see above
    with contextlib.suppress(nats.errors.Error):
        await sub._conn._send_unsubscribe(sub._id)  # noqa: SLF001 - no public way, see above
        await sub._conn.flush(timeout=1)  # noqa: SLF001 - the same connection
    held = held + await fetches.end()
    while not sub._pending_queue.empty():  # noqa: SLF001 - no public way to read it, see above
        held.append(sub._pending_queue.get_nowait())  # noqa: SLF001 - as above
    with contextlib.suppress(nats.errors.Error):
        # Status messages (a pull request's timeout, our own end of request) have no reply subject.
        await asyncio.gather(*(message.nak() for message in held if message.reply))
        await subscription.unsubscribe()


async def consume_events(
    js: JetStreamContext,
    *,
    durable: str,
    subjects: list[str],
    handle: EventHandler,
    batch: int = 100,
    stream: str = "EVENTS",
) -> None:
    """Apply events from ``stream`` with one durable consumer shared by every replica of a service.

    A message is acked only after ``handle`` has committed, so a crash redelivers it; ``handle``
    must therefore be idempotent. Undecodable messages are terminated (never redelivered);
    failures are nak'ed with a delay and retried.
    """
    config = api.ConsumerConfig(
        durable_name=durable,
        filter_subjects=subjects,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=30,
        max_ack_pending=10_000,
    )
    async with contextlib.aclosing(pull_batches(js, stream, config, batch)) as batches:
        async for messages in batches:
            await finished(_apply_all(messages, handle))


async def _apply_all(messages: list[Msg], handle: EventHandler) -> None:
    for message in messages:
        await _apply(message, handle)


async def _apply(message: Msg, handle: EventHandler) -> None:
    new_log_context(
        subject=message.subject,
        request_id=(message.headers or {}).get("X-Request-ID"),
        event_id=(message.headers or {}).get("Nats-Msg-Id"),
    )
    try:
        event = event_decoder.decode(message.data)
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
