"""A durable consumer stopped at any moment hands back what it took and had not acked, so the next
start gets it at once instead of after the ack wait; and a stop on a quiet stream is prompt.

On the real bus, without the services: the stop lands wherever the consumer is (waiting for a
message, in a batch fetch, between fetches), as a rollout's SIGTERM does."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import nats
import pytest
import pytest_asyncio
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api

from devstack.infra import NatsServer
from shared import bus, pull, tasks
from shared.bus_access import SETUP_USER

pytestmark = pytest.mark.timeout(120)

STREAM = "STOPS"
DURABLE = "stops-test"
CONFIG = api.ConsumerConfig(
    durable_name=DURABLE,
    ack_policy=api.AckPolicy.EXPLICIT,
    ack_wait=30,
    max_ack_pending=100_000,
)


@pytest_asyncio.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    nc = await nats.connect(nats_server.url, user=SETUP_USER, password=nats_server.password)
    await nc.jetstream().add_stream(name=STREAM, subjects=["stops.>"])
    yield nc
    await nc.close()


async def consume(js: JetStreamContext, acked: list[int] | None = None) -> None:
    """Ack every batch, each as a unit of work finished through a stop (as the services do)."""
    async with contextlib.aclosing(bus.pull_batches(js, STREAM, CONFIG, batch=100)) as batches:
        async for messages in batches:
            await tasks.finished(asyncio.gather(*(message.ack() for message in messages)))
            if acked is not None:
                acked += [message.metadata.sequence.stream for message in messages]


# A message the consumer sent to a pull request just before an unsubscribe still came after the
# flush behind it (or not at all), so a stop that unsubscribed first left one message to the ack
# wait in about one run of ten; the stop now waits for its last pull request to end instead.
async def test_stopped_mid_stream_again_and_again_nothing_waits_for_the_ack_wait(
    nats_server: NatsServer, nc: NATS
) -> None:
    js = nc.jetstream()
    publishing = True

    async def publish() -> None:
        while publishing:
            await asyncio.gather(*(js.publish("stops.beat", b"x") for _ in range(5)))
            await asyncio.sleep(0.002)

    publisher = asyncio.create_task(publish())
    try:
        # Stop points spread over the consumer's cycle: a fetch in flight, a batch being
        # collected, a batch in hand. Losing a message takes one unlucky moment, so many stops.
        for round_ in range(30):
            conn = await nats.connect(nats_server.url, user=SETUP_USER, password=nats_server.password)
            consumer = asyncio.create_task(consume(conn.jetstream()))
            await asyncio.sleep(0.05 + (round_ % 7) * 0.013)
            await tasks.stop(consumer)
            assert consumer.cancelled()
            await conn.drain()
    finally:
        publishing = False
        await publisher
    last = (await js.stream_info(STREAM)).state.last_seq

    conn = await nats.connect(nats_server.url, user=SETUP_USER, password=nats_server.password)
    consumer = asyncio.create_task(consume(conn.jetstream()))
    try:
        deadline = asyncio.get_running_loop().time() + 10  # a third of the ack wait
        while (info := await js.consumer_info(STREAM, DURABLE)).ack_floor.stream_seq < last:
            assert asyncio.get_running_loop().time() < deadline, (
                f"stuck at {info.ack_floor.stream_seq} of {last}: {info.num_ack_pending} unacked, "
                "held by a stopped consumer until the ack wait"
            )
            await asyncio.sleep(0.2)
        assert info.num_ack_pending == 0, info
    finally:
        await tasks.stop(consumer)
        await conn.close()


async def test_a_consumer_waiting_on_a_quiet_stream_stops_at_once(nats_server: NatsServer, nc: NATS) -> None:
    """Its pull request lives a moment (PULL_SECONDS), not the seconds a fetch would wait; the stop
    waits for its end, and a message published afterwards goes to the next consumer at once."""
    conn = await nats.connect(nats_server.url, user=SETUP_USER, password=nats_server.password)
    consumer = asyncio.create_task(consume(conn.jetstream()))
    await asyncio.sleep(0.5)  # set up, its fetch waiting
    started = asyncio.get_running_loop().time()
    await tasks.stop(consumer)
    # At most one pull request's life, and its end's way back and the hand-back on a loaded 2-core
    # machine (a second). Still below the life plus LOST_AFTER_SECONDS: a stop that only ended
    # once it gave its request up as lost, or waited out a fetch's seconds, fails.
    assert asyncio.get_running_loop().time() - started < pull.PULL_SECONDS + 1.5
    await conn.drain()

    ack = await nc.jetstream().publish("stops.beat", b"x")
    acked: list[int] = []
    conn = await nats.connect(nats_server.url, user=SETUP_USER, password=nats_server.password)
    consumer = asyncio.create_task(consume(conn.jetstream(), acked))
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while ack.seq not in acked:
            assert asyncio.get_running_loop().time() < deadline, "the stopped consumer's pull request took it"
            await asyncio.sleep(0.05)
    finally:
        await tasks.stop(consumer)
        await conn.close()


async def test_a_consumer_deleted_while_it_runs_is_created_again(nats_server: NatsServer, nc: NATS) -> None:
    """An operator deleting the durable consumer (or a stream restored without it) does not leave
    the service asking a consumer that is gone: it is created again and the stream flows."""
    js = nc.jetstream()
    acked: list[int] = []
    conn = await nats.connect(nats_server.url, user=SETUP_USER, password=nats_server.password)
    consumer = asyncio.create_task(consume(conn.jetstream(), acked))
    try:
        first = await js.publish("stops.beat", b"x")
        deadline = asyncio.get_running_loop().time() + 5
        while first.seq not in acked:
            assert asyncio.get_running_loop().time() < deadline, "the consumer never took a message"
            await asyncio.sleep(0.05)

        await js.delete_consumer(STREAM, DURABLE)
        after = await js.publish("stops.beat", b"x")
        deadline = asyncio.get_running_loop().time() + 10
        while after.seq not in acked:
            assert asyncio.get_running_loop().time() < deadline, "the deleted consumer was not created again"
            await asyncio.sleep(0.05)
        assert (await js.consumer_info(STREAM, DURABLE)).config.durable_name == DURABLE
    finally:
        await tasks.stop(consumer)
        await conn.close()


async def test_a_lagging_loop_does_not_give_up_on_a_live_pull_request(
    nats_server: NatsServer, nc: NATS
) -> None:
    """A loop blocked past a pull request's life finds its end waiting to be read, not lost: a
    request given up on while alive on the server would overlap the next, and its late messages
    would be counted against that one."""
    conn = await nats.connect(nats_server.url, user=SETUP_USER, password=nats_server.password)
    consumer = asyncio.create_task(consume(conn.jetstream()))
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                await asyncio.sleep(0.3)  # a pull request waiting on the server
                time.sleep(pull.PULL_SECONDS + pull.LOST_AFTER_SECONDS + 0.5)  # noqa: ASYNC251 - the lag
            await asyncio.sleep(0.5)
        assert not [log for log in logs if log["event"] == "consumer_pull_request_lost"]
    finally:
        await tasks.stop(consumer)
        await conn.close()
