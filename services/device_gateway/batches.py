"""Heartbeats of concurrent requests stored in JetStream together: one ack for many.

JetStream acks every message it stores, and waiting for an ack (a request, its inbox, its reply
parsed) cost the gateway more than the rest of a heartbeat. The heartbeats that arrive while the
worker handles one round of its event loop are published as one *atomic batch* (nats-server 2.12+,
the ``HEARTBEATS`` stream allows it): each keeps its own subject and body (the heartbeat service
reads them as before; the batch's two headers ride along), and the single ack of the batch's
commit says that all of them are stored, or none. Every request of the batch is answered 202 only
once that ack has come; a failed batch answers each of them 503, as a failed publish did.

Alone (a quiet gateway), a heartbeat is published as before, without a batch. While the batches in
flight are at their bound, new heartbeats wait in the next one: under load the batches grow
instead of the round trips multiplying.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from typing import Any

import nats.errors
import prometheus_client
from nats.aio.client import Client as NATS
from nats.js import api

# The server keeps at most 1,000 messages a batch, and 50 batches open on a stream at once (for
# every publisher together): a worker keeps its share small.
MAX_BATCH = 500
MAX_IN_FLIGHT = 2

_ID, _SEQUENCE, _COMMIT = (
    h.value for h in (api.Header.BATCH_ID, api.Header.BATCH_SEQUENCE, api.Header.BATCH_COMMIT)
)

BATCH_SIZE = prometheus_client.Histogram(
    "gateway_report_batch_size",
    "Heartbeats stored in JetStream with one ack",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
)


class BatchFailed(Exception):
    """JetStream did not store the batch (its commit was refused or not acked in time)."""


class _Batch:
    __slots__ = ("messages", "waiters")

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.waiters: list[asyncio.Future[None]] = []


class Batches:
    """One worker's heartbeats on their way into JetStream."""

    def __init__(self, *, timeout: float = 2, max_batch: int = MAX_BATCH, max_in_flight: int = MAX_IN_FLIGHT):
        self.nc: NATS | None = None  # set once connected (the app's NATS connection)
        self.timeout = timeout
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._open = _Batch()
        self._scheduled = False
        self._in_flight = 0
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(6)  # per process: batch ids of all workers stay distinct
        self._tasks: set[asyncio.Task[None]] = set()

    def store(self, subject: str, payload: bytes) -> asyncio.Future[None]:
        """A future done once JetStream holds the message (BatchFailed or a NATS error if not)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._open.messages.append((subject, payload))
        self._open.waiters.append(future)
        if not self._scheduled:
            # Sent once this round of the loop is over: the heartbeats of every request it handles
            # join this batch.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send_open)
        return future

    def _send_open(self) -> None:
        self._scheduled = False
        while self._open.messages and self._in_flight < self.max_in_flight:
            batch = self._open
            if len(batch.messages) > self.max_batch:
                self._open = _Batch()
                self._open.messages = batch.messages[self.max_batch :]
                self._open.waiters = batch.waiters[self.max_batch :]
                del batch.messages[self.max_batch :], batch.waiters[self.max_batch :]
            else:
                self._open = _Batch()
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: _Batch) -> None:
        try:
            await self._publish(batch.messages)
        except Exception as exc:  # noqa: BLE001 - each request of the batch answers for it
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
        else:
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_result(None)
        finally:
            BATCH_SIZE.observe(len(batch.messages))
            self._in_flight -= 1
            if self._open.messages and not self._scheduled:
                self._send_open()

    async def _publish(self, messages: list[tuple[str, bytes]]) -> None:
        nc = self.nc
        if nc is None:
            raise nats.errors.ConnectionClosedError
        if len(messages) == 1:  # alone: an ordinary publish, as a quiet gateway always made
            subject, payload = messages[0]
            reply = await nc.request(subject, payload, timeout=self.timeout)
            _check(reply.data, None, 1)
            return
        batch_id = f"{self._prefix}{next(self._ids):x}"
        last = len(messages)
        for sequence, (subject, payload) in enumerate(messages[:-1], 1):
            await nc.publish(subject, payload, headers={_ID: batch_id, _SEQUENCE: str(sequence)})
        subject, payload = messages[-1]
        commit = {_ID: batch_id, _SEQUENCE: str(last), _COMMIT: "1"}
        reply = await nc.request(subject, payload, timeout=self.timeout, headers=commit)
        _check(reply.data, batch_id, last)


def _check(data: bytes, batch_id: str | None, count: int) -> None:
    """The ack must say the stream stored it: all of the batch (its id and count), or the one."""
    try:
        ack: dict[str, Any] = json.loads(data)
    except ValueError:
        raise BatchFailed(f"not an ack: {data[:200]!r}") from None
    if "error" in ack or "seq" not in ack:
        raise BatchFailed(str(ack.get("error", ack)))
    if batch_id is not None and (ack.get("batch") != batch_id or ack.get("count") != count):
        raise BatchFailed(f"the ack is not for this batch: {ack}")
