"""``GET /v1/heartbeats/stream``: the tenant's heartbeats and presence changes as server-sent events.

Both live on the ``HEARTBEATS`` stream, so one ordered consumer with two filters
(``heartbeat.<tenantId>.*`` and ``heartbeat.presence.changed``) reads them in stream order, and
an event's id is its stream sequence: a client that reconnects with ``Last-Event-ID`` resumes
right after the last event it got, with no gap and no repeat, as long as the stream still holds
it (``HEARTBEATS`` keeps a day by default: ``HEARTBEAT_STREAM_HOURS``). Comments every
``SSE_KEEPALIVE_SECONDS`` keep proxies from closing an idle stream. A client that reads slower
than events come is dropped once ``SSE_BUFFER`` events wait for it (it reconnects and resumes),
rather than buffered forever.
Each stream is a JetStream consumer, so a tenant holds at most ``SSE_STREAMS_PER_TENANT`` at once
(counted per process); one more is answered 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid

import msgspec
import nats.errors
import structlog
from aiohttp import web
from nats.aio.msg import Msg
from nats.js import api

from shared.app_keys import SETTINGS
from shared.auth import principal_of
from shared.bus import JS
from shared.errors import BadRequest, ErrorDetail, RateLimited, Unavailable
from shared.events import PresenceChanged, subject_of_type
from shared.http import response_ids
from shared.revocations import REVOKED_CLIENTS

log = structlog.get_logger()

_PRESENCE_SUBJECT = subject_of_type(PresenceChanged)
_presence = msgspec.json.Decoder(PresenceChanged)
_CLOSE = object()  # put in a stream's queue: end it (shutdown, or the client fell behind)

# Each open stream's queue, and whose stream it is.
STREAM_QUEUES = web.AppKey("STREAM_QUEUES", dict[asyncio.Queue[object], uuid.UUID])


# How often an open stream looks whether its client was revoked meanwhile: a stream is one long
# request, and the token it opened with must not keep it going past a revocation.
_REVOCATION_CHECK_SECONDS = 1.0


async def stream_heartbeats(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    tenant_id = principal.tenant_id
    revoked = request.app[REVOKED_CLIENTS]
    settings = request.app[SETTINGS]
    resume_after = _last_event_id(request)
    open_streams = sum(1 for owner in request.app[STREAM_QUEUES].values() if owner == tenant_id)
    if open_streams >= settings.sse_streams_per_tenant:
        raise RateLimited(
            f"this tenant already has {open_streams} heartbeat streams open here; close one or retry later",
            retry_after=30,
        )
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=settings.sse_buffer)
    # Counted from before the subscription: concurrent requests cannot all slip under the cap.
    request.app[STREAM_QUEUES][queue] = tenant_id
    too_slow = False

    async def on_message(message: Msg) -> None:
        nonlocal too_slow
        if message.subject == _PRESENCE_SUBJECT:
            if _presence.decode(message.data).tenant_id != tenant_id:
                return
            event = b"presence"
        else:
            event = b"heartbeat"
        frame = b"id: %d\nevent: %s\ndata: %s\n\n" % (message.metadata.sequence.stream, event, message.data)
        try:
            queue.put_nowait(frame)
        except asyncio.QueueFull:
            # The writer below is stuck in write() on the client's full socket: cut the
            # connection, which ends that write; the client resumes from what it really got.
            too_slow = True
            if request.transport is not None:
                request.transport.abort()

    config = api.ConsumerConfig(
        filter_subjects=[f"heartbeat.{tenant_id}.*", _PRESENCE_SUBJECT],
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE if resume_after else api.DeliverPolicy.NEW,
        opt_start_seq=resume_after + 1 if resume_after else None,
    )
    try:
        subscription = await request.app[JS].subscribe(
            "", stream="HEARTBEATS", cb=on_message, ordered_consumer=True, config=config
        )
    except BaseException as exc:  # cancelled too: the stream never opened, so it counts no more
        request.app[STREAM_QUEUES].pop(queue, None)
        if isinstance(exc, TimeoutError | nats.errors.Error):
            raise Unavailable("the heartbeat stream is not reachable; retry shortly", retry_after=5) from None
        raise
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx-style proxies: pass each event on at once
            **response_ids(),
        }
    )
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while not revoked.revoked(principal.client_id):
            try:
                async with asyncio.timeout(min(_REVOCATION_CHECK_SECONDS, settings.sse_keepalive_seconds)):
                    frame = await queue.get()
            except TimeoutError:
                if loop.time() - quiet_since < settings.sse_keepalive_seconds:
                    continue
                frame = b": keep-alive\n\n"
            if not isinstance(frame, bytes):  # _CLOSE: stopping, or the client fell behind
                break
            # write() waits while the client's socket is full; meanwhile on_message fills the queue.
            await response.write(frame)
            quiet_since = loop.time()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        request.app[STREAM_QUEUES].pop(queue, None)
        with contextlib.suppress(nats.errors.Error):
            await subscription.unsubscribe()
    if too_slow:
        log.warning("sse_client_dropped_too_slow", buffer=settings.sse_buffer)
    return response


def _last_event_id(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        return 0
    if not re.fullmatch(r"[0-9]{1,18}", raw):  # a stream sequence; "²" is no digit to int()
        raise BadRequest(
            "Last-Event-ID must be the id of an event this stream sent",
            details=[ErrorDetail("Last-Event-ID", "format")],
        )
    return int(raw)


async def close_streams(app: web.Application) -> None:
    """At shutdown: open streams end instead of holding the shutdown up until its timeout."""
    for queue in app[STREAM_QUEUES].copy():
        _end(queue)


def _end(queue: asyncio.Queue[object]) -> None:
    """Make the stream end after what it already sent: drop one waiting event if need be (the
    client resumes from its Last-Event-ID), then the close marker."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(_CLOSE)
