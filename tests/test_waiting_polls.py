"""Waiting polls: ``GET /v1/device/playlist`` and ``/config`` with If-None-Match and
``Prefer: wait=N`` (RFC 7240) are held until the content changes (200 at once) or N seconds pass
(304), with ``Preference-Applied``; a revoke answers them 401 and a stopping gateway 304, at once.

Bounds on "at once" are generous (a loaded 2-core machine); ``make bench`` measures the latency.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from devstack.infra import free_port
from devstack.services import wait_ready
from services.device_gateway.admission import ADMISSION, Admission
from services.device_gateway.waits import WAITS, Waits, hold, requested_wait
from shared.settings import Settings
from tests.admin_api import CONFIG_PATCH, PLAYLIST
from tests.binding import assert_error, until_gateway
from tests.stack import Stack, spawn

AT_ONCE = 3.0  # seconds: "at once" on a loaded machine, far below any wait asked here
NEW_PLAYLIST = {"items": [{"type": "video", "url": "https://cdn.example.com/b.mp4", "durationSeconds": 30}]}


@dataclass
class Answer:
    status: int
    body: Any
    headers: CIMultiDict[str]
    seconds: float


async def poll(stack: Stack, key: str, path: str = "/v1/device/playlist", **headers: str) -> Answer:
    started = time.monotonic()
    status, body, response = await stack.call("GET", path, token=key, headers=headers)
    return Answer(status, body, CIMultiDict(response.headers), time.monotonic() - started)


async def device_with_etag(
    stack: Stack, path: str = "/v1/device/playlist"
) -> tuple[dict[str, Any], str, str]:
    """A tenant, a TV the gateway knows, and the ETag of what it holds: ``(tenant, key, etag)``."""
    tenant = await stack.tenant()
    _, registered = await stack.paired_device(tenant["token"])
    key = registered["apiKey"]
    await until_gateway(stack, key, 200)
    first = await poll(stack, key, path)
    assert first.status == 200, first
    return {**tenant, **registered}, key, first.headers["ETag"]


async def held(stack: Stack, count: int = 1) -> None:
    """Wait until the gateway holds ``count`` polls: a later answer then comes from the wait, not
    from a poll that had not reached the gateway yet (a loaded machine can take its time)."""
    waits = stack.runners["device-gateway"].app[WAITS]

    async def holding() -> bool:
        return waits.count == count

    await stack.eventually(holding, timeout=15)


async def test_a_waiting_playlist_poll_gets_the_new_playlist_as_soon_as_an_admin_changes_it(stack):
    device, key, etag = await device_with_etag(stack)
    waiting = asyncio.create_task(poll(stack, key, **{"If-None-Match": etag, "Prefer": "wait=30"}))
    await held(stack)
    status, _, _ = await stack.call(
        "PUT", f"/v1/screens/{device['screenId']}/playlist", token=device["token"], json=NEW_PLAYLIST
    )
    changed_at = time.monotonic()
    assert status == 200
    answer = await waiting
    assert time.monotonic() - changed_at < AT_ONCE, answer
    assert answer.status == 200, answer
    assert [item["url"] for item in answer.body["items"]] == ["https://cdn.example.com/b.mp4"], answer
    assert answer.headers["ETag"] != etag and answer.headers["Preference-Applied"] == "wait=30", answer
    # The new ETag is the one a plain poll gets now.
    assert (await poll(stack, key, **{"If-None-Match": answer.headers["ETag"]})).status == 304


async def test_a_waiting_config_poll_gets_the_new_config_and_ignores_playlist_changes(stack):
    device, key, etag = await device_with_etag(stack, "/v1/device/config")
    waiting = asyncio.create_task(
        poll(stack, key, "/v1/device/config", **{"If-None-Match": etag, "Prefer": "wait=30"})
    )
    await held(stack)
    # A playlist change wakes the screen's waits; the config poll looks, sees its ETag, waits on.
    await stack.call(
        "PUT", f"/v1/screens/{device['screenId']}/playlist", token=device["token"], json=PLAYLIST
    )

    async def playlist_applied() -> bool:
        answer = await poll(stack, key)
        return [item["url"] for item in answer.body["items"]] == [PLAYLIST["items"][0]["url"]]

    # Once the gateway serves the new playlist it has woken the config poll, which runs before
    # this plain poll's answer does: held still, it is waiting on.
    await stack.eventually(playlist_applied, timeout=15)
    assert stack.runners["device-gateway"].app[WAITS].count == 1 and not waiting.done()
    await stack.call(
        "PATCH", f"/v1/screens/{device['screenId']}/config", token=device["token"], json=CONFIG_PATCH
    )
    changed_at = time.monotonic()
    answer = await waiting
    assert time.monotonic() - changed_at < AT_ONCE, answer
    assert answer.status == 200 and answer.body["syncIntervalMinutes"] == 17, answer
    assert answer.headers["Preference-Applied"] == "wait=30" and answer.headers["ETag"] != etag, answer


async def test_an_unchanged_content_is_a_304_after_the_wait_with_preference_applied(stack):
    _, key, etag = await device_with_etag(stack)
    answer = await poll(stack, key, **{"If-None-Match": etag, "Prefer": "wait=2"})
    assert answer.status == 304, answer
    assert (answer.headers["Preference-Applied"], answer.headers["ETag"]) == ("wait=2", etag), answer
    assert 1.9 <= answer.seconds < 2 + AT_ONCE, answer


async def test_without_prefer_or_with_a_stale_etag_the_answer_comes_at_once_as_before(stack):
    _, key, etag = await device_with_etag(stack)
    plain = await poll(stack, key, **{"If-None-Match": etag})
    assert plain.status == 304 and "Preference-Applied" not in plain.headers, plain
    stale = await poll(stack, key, **{"If-None-Match": '"stale"', "Prefer": "wait=30"})
    assert stale.status == 200 and stale.headers["ETag"] == etag, stale
    assert "Preference-Applied" not in stale.headers and stale.seconds < AT_ONCE, stale
    # Prefer without If-None-Match: the TV holds nothing, so it gets the content at once.
    unconditional = await poll(stack, key, Prefer="wait=30")
    assert unconditional.status == 200 and unconditional.seconds < AT_ONCE, unconditional


@pytest.mark.parametrize(
    "prefer", ["wait=abc", "wait=-1", "wait=1.5", "wait", "wait=", 'wait="x"', "wait=0", "respond-async"]
)
async def test_a_malformed_or_other_preference_is_ignored_not_an_error(stack, prefer):
    _, key, etag = await device_with_etag(stack)
    answer = await poll(stack, key, **{"If-None-Match": etag, "Prefer": prefer})
    assert answer.status == 304 and "Preference-Applied" not in answer.headers, answer
    assert answer.seconds < AT_ONCE, answer


@pytest.mark.parametrize("how", ["revoke", "logout"])
async def test_a_revoke_answers_the_devices_waiting_polls_401_at_once(stack, how):
    device, key, etag = await device_with_etag(stack)
    config_etag = (await poll(stack, key, "/v1/device/config")).headers["ETag"]
    waiting = [
        asyncio.create_task(poll(stack, key, **{"If-None-Match": etag, "Prefer": "wait=30"})),
        asyncio.create_task(
            poll(stack, key, "/v1/device/config", **{"If-None-Match": config_etag, "Prefer": "wait=30"})
        ),
    ]
    await held(stack, 2)
    if how == "revoke":
        status, body, _ = await stack.call(
            "POST", f"/v1/devices/{device['deviceId']}/revoke", token=device["token"], json={"reason": "test"}
        )
    else:
        status, body, _ = await stack.call("POST", "/v1/device/logout", token=key)
    revoked_at = time.monotonic()
    assert status == 200, body
    for answer in await asyncio.gather(*waiting):
        assert time.monotonic() - revoked_at < AT_ONCE, answer
        assert_error(answer.status, answer.body, 401, "device_revoked")


async def test_a_lagging_worker_sheds_plain_polls_and_still_holds_waiting_ones(stack):
    """Held, a poll costs no CPU until its content changes; refused, it would come back later."""
    _, key, etag = await device_with_etag(stack)
    admission = stack.runners["device-gateway"].app[ADMISSION]
    max_lag, admission.max_lag = admission.max_lag, -1.0  # every tick of the lag timer is late now

    async def shed() -> bool:
        return (await poll(stack, key, **{"If-None-Match": etag})).status == 429

    try:
        await stack.eventually(shed)
        waiting = await poll(stack, key, **{"If-None-Match": etag, "Prefer": "wait=1"})
        assert waiting.status == 304 and waiting.headers["Preference-Applied"] == "wait=1", waiting
        # One answered at once is shed as before: a stale ETag, a wait not understood.
        for headers in (
            {"If-None-Match": '"stale"', "Prefer": "wait=1"},
            {"If-None-Match": etag, "Prefer": "x"},
        ):
            answer = await poll(stack, key, **headers)
            assert_error(answer.status, answer.body, 429, "rate_limited")
    finally:
        admission.max_lag = max_lag


@pytest.fixture
def limited(settings: Settings) -> Settings:
    # 3 s: long enough for the second poll to come while the first is held, on a loaded machine.
    return msgspec.structs.replace(settings, device_wait_max_seconds=3, gateway_max_waiting=1)


async def test_the_wait_is_cut_to_the_setting_and_past_the_cap_a_poll_is_not_held(limited, sockets):
    async with Stack(limited, sockets) as stack:
        _, key, etag = await device_with_etag(stack)
        conditional = {"If-None-Match": etag, "Prefer": "wait=3600"}
        first = asyncio.create_task(poll(stack, key, **conditional))
        await held(stack)
        # The worker holds one already (GATEWAY_MAX_WAITING=1): the next is answered at once.
        second = await poll(stack, key, **conditional)
        assert second.status == 304 and "Preference-Applied" not in second.headers, second
        answer = await first
        assert answer.status == 304 and answer.headers["Preference-Applied"] == "wait=3", answer
        assert 2.9 <= answer.seconds < 3 + AT_ONCE, answer


@pytest.mark.timeout(120)
async def test_sigterm_answers_the_waiting_polls_304_at_once_and_the_gateway_stops(stack, tmp_path: Path):
    """A rollout's stop: the held polls are not what the drain waits for."""
    _, key, etag = await device_with_etag(stack)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "gateway.log"
    gateway = spawn("device-gateway", msgspec.structs.replace(stack.settings, device_gateway_port=port), log)
    try:
        await wait_ready({"device-gateway": url}, [gateway], within=30)
        headers = {"Authorization": f"Bearer {key}", "If-None-Match": etag, "Prefer": "wait=60"}
        async with aiohttp.ClientSession() as http:

            async def waiting_poll() -> tuple[int, CIMultiDict[str]]:
                async with http.get(url + "/v1/device/playlist", headers=headers) as response:
                    return response.status, CIMultiDict(response.headers)

            waiting = [asyncio.create_task(waiting_poll()) for _ in range(5)]

            async def all_held() -> bool:
                async with http.get(url + "/metrics") as response:
                    return "\ngateway_waiting_requests 5.0\n" in await response.text()

            # The gauge is set every 5 s: the SIGTERM must find the polls held, not on their way.
            await stack.eventually(all_held, timeout=30, interval=0.5)
            assert not any(task.done() for task in waiting)
            gateway.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            for status, answered in await asyncio.gather(*waiting):
                assert status == 304 and answered["ETag"] == etag, answered
                assert answered["Connection"] == "close", answered  # the next poll goes elsewhere
            assert time.monotonic() - stopped_at < AT_ONCE
        assert await asyncio.to_thread(gateway.wait, 10) == 0, log.read_text()[-3000:]
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()


# ---- the parts, without a server ------------------------------------------------------------------


def request_with(*prefer: str, waits: Waits | None = None) -> web.Request:
    app = web.Application()
    app[WAITS] = waits or Waits(limit=10, max_seconds=60)
    app[ADMISSION] = Admission(max_lag_ms=250, max_pending=1, max_downloads_per_device=1)
    headers = [("Prefer", value) for value in prefer]
    return make_mocked_request("GET", "/v1/device/playlist", headers=headers, app=app)


@pytest.mark.parametrize(
    ("prefer", "seconds"),
    [
        (["wait=10"], 10),
        (["WAIT=10"], 10),
        (["wait = 10"], 10),
        (['wait="10"'], 10),
        (["wait=0010"], 10),
        (["respond-async, wait=10"], 10),
        (["handling=lenient;x=y,wait=10;foo"], 10),
        (['return="a,wait=5", wait=10'], 10),  # a comma inside a quoted value separates nothing
        (["respond-async", "wait=10"], 10),  # two Prefer headers are one list
        (["wait=10, wait=20"], 10),  # only the first instance counts
        (["wait=100"], 60),  # cut to the cap
        (["wait=" + "9" * 5000], 60),
        ([], None),
        (["respond-async"], None),
        (["wait=0"], None),
        (["wait=-5"], None),
        (["wait=5s"], None),
        (["wait=1.5"], None),
        (["wait=\u0665"], None),  # an Arabic-Indic digit is no DIGIT
        (["wait=abc, wait=10"], None),  # the first instance is invalid, so ignored
        (["waiting=10"], None),
        ([""], None),
    ],
)
def test_the_prefer_header_is_read_as_rfc_7240_says(prefer: list[str], seconds: int | None) -> None:
    assert requested_wait(request_with(*prefer), 60) == seconds


async def test_waits_are_woken_by_key_and_leave_nothing_behind() -> None:
    waits = Waits(limit=10, max_seconds=60)
    one = asyncio.create_task(waits.changed([("content", b"a"), ("device", b"d")], 30))
    two = asyncio.create_task(waits.changed([("content", b"a")], 30))
    three = asyncio.create_task(waits.changed([("content", b"b")], 0.5))
    # One turn of the loop: the tasks, scheduled before this one, each run up to their wait (no
    # wall-clock time involved, so a loaded machine changes nothing).
    await asyncio.sleep(0)
    assert waits.count == 3
    waits.wake(("content", b"a"))
    assert await one is True and await two is True
    assert await three is False  # its time passed
    assert waits.count == 0 and not waits._waiting
    four = asyncio.create_task(waits.changed([("device", b"d")], 30))
    await asyncio.sleep(0)
    assert waits.count == 1
    waits.wake_all()
    assert await four is False and waits.count == 0 and not waits._waiting


def identity(response: web.Response) -> web.Response:
    return response


async def test_a_stopping_or_full_worker_answers_at_once_without_preference_applied() -> None:
    def never() -> None:
        raise AssertionError("nothing changed: nothing to look at again")

    for waits in (Waits(limit=0, max_seconds=60), Waits(limit=10, max_seconds=60)):
        if waits.limit:
            waits.wake_all()  # the process stops: what comes now is not held either
        unchanged = web.Response(status=304)
        started = time.monotonic()
        answer = await hold(
            request_with("wait=30", waits=waits), (("content", b"x"),), partial(identity, unchanged), never
        )
        assert answer is unchanged and "Preference-Applied" not in answer.headers
        assert time.monotonic() - started < 0.5 and waits.count == 0
