"""The stack on a three-node NATS cluster, streams and buckets at three replicas: the leader of a
stream or bucket SIGKILLed while TVs are bound and revoked, content changes and heartbeats arrive;
then every node restarted in turn under a simulated fleet. Nothing is lost, nothing applied twice,
and the gateway converges within 5 s of the bus being whole again (docs/reliability.md)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from bench.simulate import Report, add_arguments, print_report, simulate
from devstack.nats_cluster import NatsCluster
from shared.bus_access import SETUP_USER
from tests.binding import gateway, pair
from tests.stack import Stack
from tests.test_convergence import AFTER_FAULT_SECONDS

pytestmark = pytest.mark.timeout(240)

PLAYLIST = {"items": [{"type": "image", "url": "https://cdn.example.com/after.png", "durationSeconds": 5}]}


@pytest_asyncio.fixture
async def nc(nats_cluster: NatsCluster) -> AsyncIterator[NATS]:
    """The test's own look at the cluster: who leads what."""
    nc: NATS = await nats.connect(
        list(nats_cluster.urls),
        user=SETUP_USER,
        password=nats_cluster.password,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
    )
    yield nc
    await nc.close()


@pytest.fixture
def js(nc: NATS) -> JetStreamContext:
    """Short answers: a question to a stream without a leader goes unanswered, and is asked again."""
    return nc.jetstream(timeout=1)


async def topology(nc: NATS) -> dict[str, list[str]]:
    """Every stream and its durable consumers, asked while every node is up (a listing waits for
    every node's part)."""
    js = nc.jetstream(timeout=10)
    names = [stream.config.name for stream in await js.streams_info() if stream.config.name]
    return {name: [c.name for c in await js.consumers_info(name) if c.config.durable_name] for name in names}


async def whole_again(js: JetStreamContext, streams: dict[str, list[str]], dead: str) -> bool:
    """Every stream and every durable consumer led by a live node (what the dead one led re-elected)."""
    try:
        for stream, durables in streams.items():
            infos = [await js.stream_info(stream), *[await js.consumer_info(stream, d) for d in durables]]
            if any(info.cluster is None or info.cluster.leader in (None, dead) for info in infos):
                return False
    except (TimeoutError, nats.errors.Error):
        return False
    return True


async def retried(stack: Stack, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """An admin's call, tried again while it is told to come back later (503 with Retry-After)."""
    deadline = time.monotonic() + 30
    while True:
        status, body, response = await stack.call(method, path, **kwargs)
        if status != 503 or "Retry-After" not in response.headers or time.monotonic() > deadline:
            return status, body
        await asyncio.sleep(0.2)


class Heartbeats:
    """A TV sending a heartbeat every 50 ms, each with an uptime of its own, until stopped."""

    def __init__(self, stack: Stack, key: str) -> None:
        self.stack = stack
        self.key = key
        self.answers: collections.Counter[int] = collections.Counter()
        self.accepted: list[int] = []
        self._stopping = False
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        for uptime in range(1, 10_000):
            if self._stopping:
                return
            body = {"uptimeSeconds": uptime, "appVersion": "1.0.0"}
            status, _, response = await self.stack.call(
                "POST", "/v1/device/heartbeat", token=self.key, json=body
            )
            self.answers[status] += 1
            if status == 202:
                self.accepted.append(uptime)
            else:  # the only other designed answer: come back later
                assert status == 503 and "Retry-After" in response.headers, status
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """After the answer to the heartbeat in flight: one cut off could be stored unanswered."""
        self._stopping = True
        await self._task


async def stored_uptimes(stack: Stack, screen_id: str) -> list[int]:
    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT (report->>'uptimeSeconds')::int AS uptime FROM heartbeat.heartbeats WHERE screen_id = $1",
            screen_id,
        )
        return sorted(row["uptime"] for row in rows)
    finally:
        await conn.close()


async def event_counts(js: JetStreamContext) -> dict[str, int]:
    info = await js.stream_info("EVENTS", subjects_filter="provisioning.device.>")
    return dict(info.state.subjects or {})


async def host_of_the_gateways_watch(js: JetStreamContext) -> str:
    """The node of the gateway's ordered consumer on ``device-keys`` (one node's memory holds it).
    A watch that was reset leaves its old consumer until the consumer's inactivity threshold: the
    live one is the one a subscription is bound to, the newest among them."""
    watches = [c for c in await js.consumers_info("KV_device-keys") if not c.config.durable_name]
    bound = [c for c in watches if c.push_bound] or watches
    assert bound, "the gateway has no watch on device-keys"
    watch = max(bound, key=lambda c: c.created)
    assert watch.cluster is not None and watch.cluster.leader is not None, watch
    return watch.cluster.leader


@pytest.mark.parametrize(
    "stream", ["KV_device-keys", "KV_screen-content", "EVENTS", "HEARTBEATS", "the gateway's watch"]
)
async def test_a_leader_killed_during_binds_revokes_content_changes_and_heartbeats(
    cluster_stack: Stack, nats_cluster: NatsCluster, nc: NATS, js: JetStreamContext, stream: str
):
    stack = cluster_stack
    tenant = await stack.tenant()
    token = tenant["token"]
    doomed = [(await pair(stack, token))[1] for _ in range(3)]  # to be revoked
    screens = [await stack.screen(token, f"New {i}") for i in range(3)]  # to be bound
    codes = [await stack.code(token, screen["id"]) for screen in screens]
    content_screen, watcher = await pair(stack, token)  # its playlist changes; it sends heartbeats
    for device in (*doomed, watcher):
        await stack.eventually(lambda device=device: _answers(stack, device["apiKey"], 200))
    before = await event_counts(js)
    streams = await topology(nc)

    if stream == "the gateway's watch":
        dead = await host_of_the_gateways_watch(js)
    else:
        cluster = (await js.stream_info(stream)).cluster
        assert cluster is not None and cluster.leader is not None, cluster
        dead = cluster.leader
    await asyncio.to_thread(nats_cluster.kill, nats_cluster.index(dead))
    killed = time.monotonic()
    heartbeats = Heartbeats(stack, watcher["apiKey"])
    try:
        # The admin's and the TVs' steps, right after the kill: each answered from PostgreSQL.
        bound = []
        for code in codes:
            status, registered = await stack.register(code["code"])
            assert status == 201, registered
            bound.append((registered, time.monotonic()))
        revoked = []
        for device in doomed:
            status, body = await retried(
                stack, "POST", f"/v1/devices/{device['deviceId']}/revoke", token=token, json={"reason": "x"}
            )
            assert status == 200, body
            revoked.append((device, time.monotonic()))
        status, body = await retried(
            stack, "PUT", f"/v1/screens/{content_screen['id']}/playlist", token=token, json=PLAYLIST
        )
        assert status == 200, body
        changed = time.monotonic()

        await stack.eventually(lambda: whole_again(js, streams, dead), timeout=30, interval=0.05)
        available = time.monotonic()

        async def within_bound(check: Any, since: float) -> float:
            start = max(since, available)
            await stack.eventually(
                check, timeout=start + AFTER_FAULT_SECONDS - time.monotonic(), interval=0.02
            )
            return time.monotonic() - start

        figures = {}
        for registered, at in bound:
            figures[f"key {registered['deviceId'][:8]}"] = await within_bound(
                lambda r=registered: _answers(stack, r["apiKey"], 200), at
            )
        for device, at in revoked:
            figures[f"revoke {device['deviceId'][:8]}"] = await within_bound(
                lambda d=device: _answers(stack, d["apiKey"], 401), at
            )
        figures["content"] = await within_bound(lambda: _plays(stack, watcher["apiKey"], PLAYLIST), changed)
        converged = time.monotonic()
        await stack.eventually(lambda: _flowing(heartbeats), timeout=10)
    finally:
        await heartbeats.stop()
    print(
        f"{stream} leader ({dead}) killed: bus whole again {available - killed:.1f} s later;"
        f" the gateway converged {max(figures.values()):.3f} s after that, {converged - killed:.1f} s"
        " after the kill"
    )

    # Nothing lost: every heartbeat answered 202 is stored, and only those, once each.
    assert heartbeats.accepted, heartbeats.answers
    await stack.eventually(
        lambda: _stored(stack, content_screen["id"], len(heartbeats.accepted)), timeout=15, interval=0.2
    )
    assert await stored_uptimes(stack, content_screen["id"]) == heartbeats.accepted
    # Nothing applied twice: each event once on the bus (retried publishes de-duplicated).
    after = await event_counts(js)
    assert after == {
        "provisioning.device.bound": before["provisioning.device.bound"] + len(codes),
        "provisioning.device.revoked": len(doomed),
    }
    for screen in screens:
        await stack.eventually(lambda s=screen: _screen_state(stack, token, s["id"], "active"), timeout=10)


async def test_a_rolling_restart_of_every_node_under_a_simulated_fleet(
    cluster_stack: Stack, nats_cluster: NatsCluster, nc: NATS, js: JetStreamContext
):
    """Each node stopped (SIGTERM, as a rolling update does), started again, and the cluster let
    become whole before the next one; TVs poll, send heartbeats, are revoked and pair again."""
    stack = cluster_stack
    streams = await topology(nc)

    async def roll(until: float, report: Report) -> None:
        for node, name in enumerate(nats_cluster.NAMES):
            await asyncio.to_thread(nats_cluster.stop, node)
            await asyncio.sleep(1)
            await asyncio.to_thread(nats_cluster.start, node)
            await stack.eventually(lambda: whole_again(js, streams, ""), timeout=30, interval=0.2)
            report.faults.append(f"{name} restarted")
        assert time.monotonic() < until, "the restarts outlasted the run: make it longer"

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--tvs",
            "30",
            "--seconds",
            "40",
            "--poll-every",
            "1",
            "--revoke-share",
            "0.2",
            "--sample-every",
            "2",
        ]
    )
    args.url = stack.base_url
    args.operator_token = stack.settings.operator_token
    args.services = [f"{name}={stack.url(name)}" for name in ("registry", "provisioning", "heartbeat")]
    report = await simulate(args, during=roll)
    print(f"rolling restart: {report.faults}, answers {dict(report.answers)}, retries {dict(report.retries)}")
    assert report.faults == [f"{name} restarted" for name in nats_cluster.NAMES]
    assert not report.errors, report.errors
    accepted = report.heartbeats_accepted
    assert sum(accepted.values()) >= 30 * 10, accepted
    assert {screen: report.stored[screen] for screen in accepted} == dict(accepted)  # none lost, none twice
    # Revoked TVs were refused and paired again (one revoked near the end may not have polled since).
    # A TV that pairs again while a node restarts may poll before its new key has reached the
    # gateway (within the convergence bound), hear 401 and pair once more: a few such are allowed.
    assert report.revokes == 6 and report.revokes - 1 <= report.repairs <= report.revokes + 2
    assert print_report(report, args)


async def _answers(stack: Stack, key: str, status: int) -> bool:
    return (await gateway(stack, key))[0] == status


async def _plays(stack: Stack, key: str, playlist: dict[str, Any]) -> bool:
    status, body = await gateway(stack, key)
    return status == 200 and [item["url"] for item in body["items"]] == [
        item["url"] for item in playlist["items"]
    ]


async def _flowing(heartbeats: Heartbeats) -> bool:
    """True once heartbeats are accepted again (the HEARTBEATS stream takes them)."""
    count = len(heartbeats.accepted)
    await asyncio.sleep(0.2)
    return len(heartbeats.accepted) > count


async def _stored(stack: Stack, screen_id: str, count: int) -> bool:
    return len(await stored_uptimes(stack, screen_id)) >= count


async def _screen_state(stack: Stack, token: str, screen_id: str, state: str) -> bool:
    status, screen, _ = await stack.call("GET", f"/v1/screens/{screen_id}", token=token)
    return status == 200 and screen["state"] == state
