"""Files devices download by name: stored by the tenant, served by the gateway per device, with
ETags and byte ranges."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from services.device_gateway.admission import ADMISSION
from tests.stack import Stack

FIRMWARE = os.urandom(300_000)


async def put_file(stack: Stack, token: str, name: str, data: bytes, query: str = "") -> tuple[int, Any]:
    status, body, _ = await stack.call(
        "PUT",
        f"/v1/content/{name}{query}",
        token=token,
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    return status, body


async def fetch(stack: Stack, key: str, name: str, **headers: str) -> tuple[int, bytes, Any]:
    async with stack.http.get(
        f"/v1/device/content/{name}", headers={"Authorization": f"Bearer {key}", **headers}
    ) as r:
        return r.status, await r.read(), r.headers


async def test_a_device_downloads_a_file_whole_in_ranges_and_conditionally(stack):
    tenant = await stack.tenant()
    _, registered = await stack.paired_device(tenant["token"])
    status, stored = await put_file(stack, tenant["token"], "firmware_v2.bin", FIRMWARE)
    assert status == 200 and stored["size"] == len(FIRMWARE) and stored["screenIds"] == [], stored
    assert stored["updatedAt"].endswith("Z"), stored
    status, listed, _ = await stack.call("GET", "/v1/content", token=tenant["token"])
    assert [f["name"] for f in listed["items"]] == ["firmware_v2.bin"], listed

    async def downloadable() -> bool:
        return (await fetch(stack, registered["apiKey"], "firmware_v2.bin"))[0] == 200

    await stack.eventually(downloadable)  # the device's key reaches the gateway
    status, body, headers = await fetch(stack, registered["apiKey"], "firmware_v2.bin")
    assert status == 200 and body == FIRMWARE
    assert headers["ETag"] == stored["etag"] and headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["X-Content-Type-Options"] == "nosniff"
    etag = headers["ETag"]
    assert (await fetch(stack, registered["apiKey"], "firmware_v2.bin", **{"If-None-Match": etag}))[0] == 304

    status, body, headers = await fetch(stack, registered["apiKey"], "firmware_v2.bin", Range="bytes=100-199")
    assert (status, body, headers["Content-Range"]) == (
        206,
        FIRMWARE[100:200],
        f"bytes 100-199/{len(FIRMWARE)}",
    )
    status, body, _ = await fetch(stack, registered["apiKey"], "firmware_v2.bin", Range="bytes=-10")
    assert (status, body) == (206, FIRMWARE[-10:])
    status, body, _ = await fetch(stack, registered["apiKey"], "firmware_v2.bin", Range="bytes=299990-")
    assert (status, body) == (206, FIRMWARE[299990:])
    status, _, headers = await fetch(stack, registered["apiKey"], "firmware_v2.bin", Range="bytes=300000-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(FIRMWARE)}"
    # A range of an older version is answered whole (If-Range no longer matches).
    status, body, _ = await fetch(
        stack, registered["apiKey"], "firmware_v2.bin", Range="bytes=0-9", **{"If-Range": '"old"'}
    )
    assert (status, len(body)) == (200, len(FIRMWARE))

    assert (await stack.call("DELETE", "/v1/content/firmware_v2.bin", token=tenant["token"]))[0] == 204
    assert (await fetch(stack, registered["apiKey"], "firmware_v2.bin"))[0] == 404
    assert (await stack.call("DELETE", "/v1/content/firmware_v2.bin", token=tenant["token"]))[0] == 404


async def test_each_device_sees_only_its_tenants_files_meant_for_its_screen(stack):
    tenant, other = await stack.tenant(), await stack.tenant("Other Co")
    lobby, lobby_tv = await stack.paired_device(tenant["token"])
    _, bar_tv = await stack.paired_device(tenant["token"])
    _, their_tv = await stack.paired_device(other["token"])
    status, stored = await put_file(stack, tenant["token"], "lobby.mp4", b"lobby", f"?screenId={lobby['id']}")
    assert status == 200 and stored["screenIds"] == [lobby["id"]], stored

    async def lobby_gets_it() -> bool:
        return (await fetch(stack, lobby_tv["apiKey"], "lobby.mp4"))[0] == 200

    await stack.eventually(lobby_gets_it)

    async def others_do_not() -> bool:
        return [
            (await fetch(stack, key, "lobby.mp4"))[0] for key in (bar_tv["apiKey"], their_tv["apiKey"])
        ] == [404, 404]

    await stack.eventually(others_do_not)  # (their keys may reach the gateway a moment later)
    assert (await fetch(stack, "dak_" + "x" * 43, "lobby.mp4"))[0] == 401
    assert (await fetch(stack, lobby_tv["apiKey"], "nothing-here"))[0] == 404
    status, theirs, _ = await stack.call("GET", "/v1/content", token=other["token"])
    assert theirs["items"] == [], theirs


async def test_bad_names_foreign_screens_and_large_files_are_refused(settings, sockets):
    async with Stack(msgspec.structs.replace(settings, max_file_bytes=1000), sockets) as stack:
        tenant, other = await stack.tenant(), await stack.tenant("Other Co")
        theirs = await stack.screen(other["token"])
        status, body = await put_file(stack, tenant["token"], ".hidden", b"x")
        assert status == 400 and body["details"][0]["field"] == "name", body
        status, body = await put_file(stack, tenant["token"], "a.bin", b"x", f"?screenId={theirs['id']}")
        assert status == 404, body
        status, body = await put_file(stack, tenant["token"], "a.bin", b"x", "?screenId=nope")
        assert status == 400 and body["details"][0]["field"] == "screenId", body
        status, body = await put_file(stack, tenant["token"], "a.bin", b"x" * 1001)
        assert status == 413, body
        status, body = await put_file(stack, "not-a-token", "a.bin", b"x")
        assert status == 401, body
        # An empty body is a file lost on the way, not one to store: refused, in words.
        status, body = await put_file(stack, tenant["token"], "a.bin", b"")
        assert status == 400 and body["error"] == "invalid_request" and "empty" in body["message"], body
        status, body, _ = await stack.call("PUT", "/v1/content/a.bin", token=tenant["token"])
        assert status == 400 and "empty" in body["message"], body
        status, body, _ = await stack.call("GET", "/v1/content", token=tenant["token"])
        assert body["items"] == [], body


LARGE = 32 * 2**20  # 256 chunks of the object store's 128 KiB


def rss_mib() -> float:
    """This process's resident memory: the whole stack runs in it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def chunks_read(stack: Stack) -> float:
    async with (
        aiohttp.ClientSession() as http,
        http.get(stack.url("device-gateway") + "/metrics") as response,
    ):
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gateway_file_chunks_read_total"
    )


async def large_file_for_a_device(stack: Stack) -> tuple[str, bytes]:
    tenant = await stack.tenant()
    _, registered = await stack.paired_device(tenant["token"])
    data = os.urandom(LARGE)
    status, stored = await put_file(stack, tenant["token"], "video.mp4", data)
    assert status == 200 and stored["size"] == LARGE, stored

    async def downloadable() -> bool:
        return (await fetch(stack, registered["apiKey"], "video.mp4", Range="bytes=0-0"))[0] == 206

    await stack.eventually(downloadable)
    return registered["apiKey"], data


async def test_a_range_reads_only_the_chunks_it_covers_and_memory_stays_bounded(settings, sockets):
    """24 requests for one byte of a 32 MiB file once held 24 copies of it (63 -> 580 MiB)."""
    async with Stack(
        msgspec.structs.replace(settings, gateway_max_downloads_per_device=100), sockets
    ) as stack:
        key, data = await large_file_for_a_device(stack)
        before_reads, before_rss, peak = await chunks_read(stack), rss_mib(), 0.0

        async def sample_rss() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_mib())
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample_rss())
        first_bytes = await asyncio.gather(
            *(fetch(stack, key, "video.mp4", Range="bytes=0-0") for _ in range(24))
        )
        last_bytes = await asyncio.gather(
            *(fetch(stack, key, "video.mp4", Range="bytes=-1") for _ in range(24))
        )
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        assert {(status, body) for status, body, _ in first_bytes} == {(206, data[:1])}
        assert {(status, body) for status, body, _ in last_bytes} == {(206, data[-1:])}
        # One chunk each (the last one found by its headers alone), never the 256 of the file.
        assert await chunks_read(stack) - before_reads == 48
        assert peak - before_rss < 64, (before_rss, peak)

        # A range across chunks, and the whole file, come out byte for byte.
        status, body, headers = await fetch(stack, key, "video.mp4", Range="bytes=131000-400000")
        assert (status, body, headers["Content-Range"]) == (
            206,
            data[131000:400001],
            f"bytes 131000-400000/{LARGE}",
        )
        status, body, _ = await fetch(stack, key, "video.mp4")
        assert status == 200 and body == data


async def test_a_device_downloads_a_limited_number_of_files_at_once(stack):
    key, _ = await large_file_for_a_device(stack)
    auth = {"Authorization": f"Bearer {key}"}
    # Straight to the gateway: nothing in between reads the bodies the TV does not read.
    async with aiohttp.ClientSession(stack.url("device-gateway")) as tv:
        held = [await tv.get("/v1/device/content/video.mp4", headers=auth) for _ in range(2)]
        assert [r.status for r in held] == [200, 200]
        # The length up front: a TV whose download is cut short knows it and resumes with a range.
        assert held[0].headers["Content-Length"] == str(LARGE)
        async with tv.get("/v1/device/content/video.mp4", headers={**auth, "Range": "bytes=0-0"}) as refused:
            body = await refused.json()
            assert refused.status == 429 and body["error"] == "rate_limited", body
            assert int(refused.headers["Retry-After"]) >= 1
        held[0].close()  # one download ends: the device may start another

        async def a_slot_is_free() -> bool:
            async with tv.get("/v1/device/content/video.mp4", headers={**auth, "Range": "bytes=0-0"}) as r:
                return r.status == 206

        await stack.eventually(a_slot_is_free)
        held[1].close()


async def test_downloads_are_shed_with_the_other_device_requests(stack):
    key, _ = await large_file_for_a_device(stack)
    admission = stack.runners["device-gateway"].app[ADMISSION]
    admission.lagging = True  # as the lag timer sets it when the worker falls behind
    try:
        status, body, headers = await fetch(stack, key, "video.mp4", Range="bytes=0-0")
        assert status == 429 and int(headers["Retry-After"]) >= 5, body
    finally:
        admission.lagging = False
    assert (await fetch(stack, key, "video.mp4", Range="bytes=0-0"))[0] == 206
