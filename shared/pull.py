"""Batches from a durable pull consumer, and a stop that hands back everything it took.

A stop must not leave a message delivered to us and never handled: the server counts it as
pending until the ack wait (30 s) runs out, and only then gives it to another replica. Such a
message can be on its way to a pull request of ours at any moment, and nothing ends a pull
request early. An unsubscribe does not: the consumer sends its messages on a path of its own, so
one it sent just before the unsubscribe can come after the round trip meant to catch it (seen: it
reached a subscription already gone), or, a moment later, finds no subscription on the server.
And nats-py's fetch hides a request's end. So each pull request here has a reply subject of its
own and a short life (PULL_SECONDS), and is known to be over when its batch has come or the
server's status for it (408 at its expiry) has; a stop waits for that, hands back (nak) what it
holds, and only then unsubscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncGenerator, Awaitable, Callable

import msgspec
import nats.errors
import prometheus_client
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from shared.tasks import finished

log = structlog.get_logger()

CONSUMER_PENDING = prometheus_client.Gauge(
    "consumer_pending_messages",
    "Messages of a durable consumer's stream not yet delivered to it, as of its last batch",
    ["durable"],
    multiprocess_mode="max",
)

# How long a pull request waits on the server for messages: the longest a stop waits for the
# last one to end. A quiet consumer asks again this often (a few bytes each time).
PULL_SECONDS = 0.5
# Past its life, how long a pull request's end may take to come back before it is checked for:
# the server forgot it when the connection dropped (a reconnect), or when the consumer's leader
# went away with it (a cluster node lost).
LOST_AFTER_SECONDS = 2.0
# How often a request past that point is looked at again while it cannot be told lost.
LOST_CHECK_SECONDS = 0.1
FLUSH_TIMEOUT_SECONDS = 1
# Once a message has come, how long to let the rest of its batch come before handing it out.
COLLECT_SECONDS = 0.05
# After the consumer refused a pull request (deleted, a leader changing, NATS unreachable).
RETRY_SECONDS = 1.0
# The consumer is not there to answer: no responders on its subject, or it was deleted (by an
# operator, or with its stream) while we pulled. It is created again, not asked forever.
_NO_RESPONDERS = api.StatusCode.SERVICE_UNAVAILABLE.value
_CONSUMER_DELETED = "consumer deleted"
# Statuses that end a pull request normally: no messages for a request that does not wait, and
# the request's expiry. Any other status but a heartbeat (100) ends it as a failure.
_ENDED = {api.StatusCode.NO_MESSAGES.value, api.StatusCode.REQUEST_TIMEOUT.value}
_HEARTBEAT = api.StatusCode.CONTROL_MESSAGE.value


def durable_config(
    durable: str, subjects: str | list[str], *, max_ack_pending: int = 10_000
) -> api.ConsumerConfig:
    """A durable consumer every replica of a service pulls from, from the stream's start, each
    message acked once its work committed (redelivered after 30 s otherwise). ``subjects``: one
    filter, or several (kept apart: a deployed consumer's filter must not change form)."""
    return api.ConsumerConfig(
        durable_name=durable,
        filter_subject=subjects if isinstance(subjects, str) else None,
        filter_subjects=subjects if isinstance(subjects, list) else None,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=30,
        max_ack_pending=max_ack_pending,
    )


async def pull_batches(
    js: JetStreamContext, stream: str, config: api.ConsumerConfig, batch: int
) -> AsyncGenerator[list[Msg], None]:
    """Batches of up to ``batch`` messages from a durable pull consumer (created or updated
    here), forever.

    Every replica of a service pulls from the same durable consumer, so each message goes to one
    of them. Use under ``contextlib.aclosing``: the stop (see the module's docstring) runs when
    the caller ends, at most about PULL_SECONDS.
    """
    durable = config.durable_name
    assert durable is not None

    async def add_consumer() -> None:
        while True:
            try:
                await js.add_consumer(stream, config)
                return
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("consumer_setup_failed", durable=durable, error=str(exc))
                await asyncio.sleep(RETRY_SECONDS)

    await add_consumer()
    pulls = _Pulls(js._nc, stream, durable, add_consumer)  # noqa: SLF001 - a context has no public way to its client
    await pulls.start()
    try:
        while True:
            messages = await pulls.next_batch(batch)
            CONSUMER_PENDING.labels(durable).set(messages[-1].metadata.num_pending)
            yield messages
    finally:
        # Shielded like a batch in hand: a stop cancels again while the hand-back is under way.
        await finished(pulls.close())


@dataclasses.dataclass
class _Request:
    reply: str  # its statuses come on it (its messages come on their own subjects)
    left: int  # messages still to come on it
    lost_at: float  # loop time after which its end is checked for
    reconnects: int  # the connection's reconnect count when it was sent


class _Pulls:
    """The pull requests of one consumer instance, one open at a time (a message names the
    subject it was published on, not the request it answers), each with a reply subject of its
    own (its end status names that); and the messages they brought, not handed out yet."""

    def __init__(
        self, nc: NATS, stream: str, durable: str, add_consumer: Callable[[], Awaitable[None]]
    ) -> None:
        self._nc = nc
        self._durable = durable
        self._add_consumer = add_consumer
        self._subject = f"{api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._ids = itertools.count()
        self._open: _Request | None = None
        self._ready: list[Msg] = []
        self._failure: str | None = None  # why a request ended early, not yet reported
        self._consumer_gone = False  # that request found no consumer to answer it
        self._changed = asyncio.Event()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._received)

    async def _received(self, message: Msg) -> None:
        request = self._open
        status = (message.headers or {}).get(api.Header.STATUS.value)
        if message.reply:  # a message of the stream
            self._ready.append(message)
            if request is not None:
                request.left -= 1
                if request.left == 0:
                    self._open = None
        # A heartbeat (100) ends nothing; the end of a request deemed lost ends nothing any more.
        elif request is not None and message.subject == request.reply and status not in (None, _HEARTBEAT):
            self._open = None
            if status not in _ENDED:
                description = (message.headers or {}).get(api.Header.DESCRIPTION.value, "")
                self._failure = f"{status} {description}".strip()
                self._consumer_gone = status == _NO_RESPONDERS or _CONSUMER_DELETED in description.lower()
        self._changed.set()

    async def next_batch(self, batch: int) -> list[Msg]:
        """Wait for messages; then, for a moment, for the rest of their batch."""
        while not self._ready:
            await self._forget_lost()
            if self._failure is not None:
                log.warning("consumer_fetch_failed", durable=self._durable, error=self._failure)
                self._failure = None
                if self._consumer_gone:
                    self._consumer_gone = False
                    await asyncio.sleep(RETRY_SECONDS)
                    await self._add_consumer()
                else:
                    await asyncio.sleep(RETRY_SECONDS)
            if self._open is None:
                await self._request(batch)
            await self._wait_for_change(self._until_lost())
        deadline = asyncio.get_running_loop().time() + COLLECT_SECONDS
        while len(self._ready) < batch and self._open is not None:
            if (left := deadline - asyncio.get_running_loop().time()) <= 0:
                break
            await self._wait_for_change(left)
        messages, self._ready = self._ready[:batch], self._ready[batch:]
        return messages

    async def close(self) -> None:
        """Wait for the open pull request to end, hand back what came, unsubscribe."""
        while self._open is not None:
            await self._forget_lost()
            await self._wait_for_change(self._until_lost())
        with contextlib.suppress(nats.errors.Error):
            await asyncio.gather(*(message.nak() for message in self._ready))
            if self._sub is not None:
                await self._sub.unsubscribe()
        self._ready = []

    async def _request(self, batch: int) -> None:
        reply = f"{self._inbox}.{next(self._ids)}"
        lost_at = asyncio.get_running_loop().time() + PULL_SECONDS + LOST_AFTER_SECONDS
        reconnects = self._nc.stats["reconnects"]
        self._open = _Request(reply, left=batch, lost_at=lost_at, reconnects=reconnects)  # before an answer
        request = {"batch": batch, "expires": int(PULL_SECONDS * 1e9)}
        try:
            await self._nc.publish(self._subject, msgspec.json.encode(request), reply=reply)
        except nats.errors.Error as exc:
            self._open = None
            self._failure = str(exc)

    async def _forget_lost(self) -> None:
        """Give up on an open request the server forgot: the connection reconnected (or closed)
        since it was sent; or, past its life with no reconnect, its end is still not in once all
        the server sent before a round trip made now has been handled (its consumer's leader went
        away with it). A loop that lagged past the request's life is not such a case: the end came
        meanwhile and waits to be read, ahead of the round trip's answer."""
        request = self._open
        if request is None:
            return
        if self._nc.is_closed or self._nc.stats["reconnects"] != request.reconnects:
            self._lost(request)
            return
        if asyncio.get_running_loop().time() <= request.lost_at:
            return
        try:
            await self._nc.flush(timeout=FLUSH_TIMEOUT_SECONDS)
        except (TimeoutError, nats.errors.Error):
            return  # no telling now; a reconnect, or the next check, decides
        # The round trip's answer was read after what came before it; let our callback take that.
        while self._sub is not None and self._sub.pending_msgs and self._open is request:
            await self._wait_for_change(LOST_CHECK_SECONDS)
        if self._open is request:
            self._lost(request)

    def _lost(self, request: _Request) -> None:
        if self._open is request:
            self._open = None
            log.warning("consumer_pull_request_lost", durable=self._durable)

    def _until_lost(self) -> float:
        if self._open is None:
            return 0
        return max(LOST_CHECK_SECONDS, self._open.lost_at - asyncio.get_running_loop().time())

    async def _wait_for_change(self, timeout: float) -> None:
        """Until a message or a request's end comes, or ``timeout`` seconds pass."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()
