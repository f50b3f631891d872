"""`make run` on a shared machine: its services listen on loopback, its PostgreSQL asks for a
password, and its entry point routes only normal paths and refuses bodies past the limits early."""

from __future__ import annotations

import time

import asyncpg
import pytest

from devstack.__main__ import environment_of_the_stack
from devstack.settings import LocalSettings
from tests.stack import Stack, raw_exchange


def test_make_run_listens_on_loopback_unless_host_says_otherwise(tmp_path) -> None:
    local = LocalSettings(data_dir=str(tmp_path))
    assert environment_of_the_stack({}, local)["HOST"] == "127.0.0.1"
    assert environment_of_the_stack({"HOST": "0.0.0.0"}, local)["HOST"] == "0.0.0.0"


async def test_the_local_postgresql_asks_for_its_password(postgres: str) -> None:
    assert ":" in postgres.split("@")[0].removeprefix("postgresql://")  # the DSN carries one
    conn = await asyncpg.connect(postgres)
    await conn.close()
    without = "postgresql://postgres@" + postgres.split("@", 1)[1]
    wrong = "postgresql://postgres:guess@" + postgres.split("@", 1)[1]
    for dsn in (without, wrong):
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(dsn)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/device/../../metrics",
        "/v1/device/%2e%2e/%2E%2E/metrics",
        "/v1/device/..%2F..%2Fmetrics",
        "/v1/device/./../../healthz",
        "/devices/../internal/oauth/device-token",
        "/devices/%2e%2e/internal/oauth/device-token",
        "/v1/devices/%2e%2e/%2e%2e/internal/oauth/device-token",
    ],
)
async def test_the_entry_point_routes_no_dot_segment_path(stack: Stack, path: str) -> None:
    for method in ("GET", "POST"):
        status, body, _ = await raw(stack, f"{method} {path}".encode(), b"")
        assert status == 404, (method, path, body)
        assert b"not_found" in body and b"http_requests_total" not in body


async def test_a_body_past_the_limit_is_refused_before_it_is_read(stack: Stack) -> None:
    started = time.monotonic()
    # Only the headers are sent: an answer means the 256 MiB were never waited for.
    status, body, _ = await raw(stack, b"POST /v1/venues", b"", length=256 * 2**20)
    assert status == 413 and b"MAX_BODY_BYTES" in body, body
    status, body, _ = await raw(stack, b"PUT /v1/content/big.bin", b"", length=256 * 2**20)
    assert status == 413 and b"MAX_FILE_BYTES" in body, body
    assert time.monotonic() - started < 5


async def test_a_chunked_body_past_the_limit_is_cut_off(stack: Stack) -> None:
    token = (await stack.tenant())["token"]

    async def chunks(total: int):
        for _ in range(total // 65536):
            yield b"x" * 65536

    too_much = stack.settings.max_body_bytes * 2
    status, body, _ = await stack.call(
        "POST", "/v1/venues", token=token, data=chunks(too_much), headers={"Content-Type": "application/json"}
    )
    assert status == 413, body


async def test_a_file_larger_than_any_json_body_streams_through(stack: Stack) -> None:
    token = (await stack.tenant())["token"]
    size = stack.settings.max_body_bytes * 3  # past the JSON limit, within MAX_FILE_BYTES
    assert size <= stack.settings.max_file_bytes
    status, stored, _ = await stack.call(
        "PUT",
        "/v1/content/clip.bin",
        token=token,
        data=b"\x01" * size,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 200 and stored["size"] == size, stored


async def raw(
    stack: Stack, line: bytes, body: bytes, *, length: int | None = None
) -> tuple[int, bytes, bytes]:
    """One request to the entry point with its path exactly as given (a client library would
    normalise it): status, body, headers."""
    size = len(body) if length is None else length
    return await raw_exchange(
        stack.settings.ports["entrypoint"],
        line
        + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + b"Content-Length: %d\r\n\r\n" % size
        + body,
    )
