"""A watched bucket whose stream is deleted and made again (a store lost or restored, a new
cluster) while the watch runs: its sequence starts over, below where the watch would resume, so the
watch loads the bucket again, and forgets the keys the new stream does not have.

On the real bus, without the services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import nats
import pytest

from devstack.infra import NatsServer
from shared import kv_watch
from shared.bus_access import SETUP_USER
from shared.projections import kv_stream

pytestmark = pytest.mark.timeout(60)

BUCKET = "watched"


async def test_a_bucket_made_again_is_loaded_again_and_what_it_lost_forgotten(
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url, user=SETUP_USER, password=nats_server.password)
    js = nc.jetstream()
    held: dict[str, bytes] = {}
    loaded = asyncio.Event()

    def apply(key: str, value: bytes | None) -> None:
        if value is None:
            held.pop(key, None)
        else:
            held[key] = value

    async def until(condition: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not check():
            assert asyncio.get_running_loop().time() < deadline, f"{condition}; held {held}"
            await asyncio.sleep(0.05)

    kv = await js.create_key_value(bucket=BUCKET, history=1)
    for index in range(5):  # the old stream's sequence goes past the new one's
        await kv.put("old", f"v{index}".encode())
    await kv.put("kept", b"1")
    watching = asyncio.create_task(kv_watch.watch_bucket(nc, BUCKET, apply, loaded.set, lambda: list(held)))
    try:
        await asyncio.wait_for(loaded.wait(), 10)
        assert held == {"old": b"v4", "kept": b"1"}

        await js.delete_stream(kv_stream(BUCKET))
        kv = await js.create_key_value(bucket=BUCKET, history=1)
        await kv.put("kept", b"2")
        await kv.put("new", b"1")  # sequence 2: far below the 6 the watch had applied

        await until(
            "the new stream's entries were not loaded, or what it lost not forgotten",
            lambda: held == {"kept": b"2", "new": b"1"},
            kv_watch.STREAM_CHECK_SECONDS + 5,
        )
        await kv.put("after", b"1")  # and it is followed from there on
        await until("an entry after the reload was missed", lambda: "after" in held, 5)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await nc.close()
