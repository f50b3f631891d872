"""Files devices download by name: stored by the tenant, served by the gateway per device, with
ETags and byte ranges."""

from __future__ import annotations

import os
from typing import Any

import msgspec

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
        status, body, _ = await stack.call("GET", "/v1/content", token=tenant["token"])
        assert body["items"] == [], body
