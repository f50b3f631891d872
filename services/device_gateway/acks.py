"""TVs' reports stored in JetStream with their acks awaited together on one inbox.

JetStream acks every message it stores. nats-py's ``publish`` makes each a request of its own: a
new reply subject, a timeout task, the ack parsed as JSON into an object; on a heartbeat that was
more of the gateway's CPU than the rest of the request. Here every report of a worker is published
with a reply subject under one inbox, subscribed once: its ack only looks for an error, and wakes
the one request that waits for it. A report is still answered 202 only once its own ack came
(the message is in the stream); many are in flight on the connection at once.

(An atomic batch, one ack for many heartbeats, was tried: its commit is synced to disk before the
ack, ~10 ms a batch on the test machine against ~0.3 ms for a message, and a fleet's gateways
would keep the stream's disk syncing all day.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription


class NotStored(Exception):
    """JetStream answered, but did not store the message (its error, or no stream for the subject)."""


class Acks:
    """One worker's reports waiting for JetStream's ack, by the token of their reply subject."""

    def __init__(self) -> None:
        self.nc: NATS | None = None
        self._inbox = ""
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._tokens = itertools.count(1)
        self._subscription: Subscription | None = None

    async def start(self, nc: NATS) -> None:
        """Subscribe the worker's ack inbox (under the connection's own inbox prefix)."""
        self._inbox = nc.new_inbox() + "."
        self._subscription = await nc.subscribe(self._inbox + "*", cb=self._acked)
        self.nc = nc

    async def stop(self) -> None:
        self.nc = None
        if self._subscription is not None:
            # The connection may have gone first: nothing more comes anyway.
            with contextlib.suppress(nats.errors.Error):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def store(
        self, subject: str, payload: bytes, *, headers: dict[str, str] | None = None, timeout: float = 2
    ) -> None:
        """Publish ``payload`` and return once JetStream acked it; NotStored if it refused it,
        TimeoutError or a NATS error if no ack came."""
        nc = self.nc
        if nc is None:
            raise nats.errors.ConnectionClosedError
        token = f"{next(self._tokens):x}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            await nc.publish(subject, payload, reply=self._inbox + token, headers=headers)
            async with asyncio.timeout(timeout):
                await future
        finally:
            self._waiting.pop(token, None)

    async def _acked(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._inbox) :], None)
        if future is None or future.done():
            return  # its request gave up (timed out) already
        data = msg.data
        # A PubAck is {"stream": ..., "seq": ...}; an error carries "error"; "no responders" (no
        # stream takes the subject) is a status message without a body.
        if not data or b'"error"' in data:
            future.set_exception(NotStored(data.decode(errors="replace")[:300] or "no stream took it"))
        else:
            future.set_result(None)
