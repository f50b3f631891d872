"""The command line the image runs (``python -m services``), the setup step a deployment runs
before its services, and the services' wait for their migrations."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import msgspec
import nats
import pytest
import pytest_asyncio
from aiohttp import web

from devstack.services import ROOT
from services.device_gateway.app import create_app as create_gateway
from services.registry.app import create_app as create_registry
from services.setup import MIGRATIONS, migrate, setup
from shared.auth import public_key_of
from shared.bus import BUCKETS, STREAMS
from shared.bus_access import SETUP_USER
from tests.conftest import new_database
from tests.stack import make_topology, spawn


@pytest_asyncio.fixture
async def empty_database(postgres: str) -> AsyncIterator[str]:
    """A database with nothing in it, as a new installation has."""
    async with new_database(postgres, template=None) as dsn:
        yield dsn


def run_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def applied_versions(dsn: str) -> dict[str, set[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            schema: {
                row["version"]
                for row in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')
            }
            for schema in MIGRATIONS
        }
    finally:
        await conn.close()


async def test_setup_migrates_every_schema_and_makes_the_streams_and_buckets_and_can_run_again(
    empty_database, nats_server
):
    env = {
        "DATABASE_URL": empty_database,
        "NATS_URL": nats_server.url,
        "NATS_PASSWORD": nats_server.password,
        "LOG_FORMAT": "json",
    }
    first = await asyncio.to_thread(run_command, "setup", env=env)
    assert first.returncode == 0, first.stderr
    expected = {
        schema: {path.stem for folder in folders for path in folder.glob("*.sql")}
        for schema, folders in MIGRATIONS.items()
    }
    assert await applied_versions(empty_database) == expected
    nc = await nats.connect(nats_server.url, user=SETUP_USER, password=nats_server.password)
    try:
        js = nc.jetstream()
        for stream in STREAMS:
            info = await js.stream_info(stream)
            assert info.config.num_replicas == 1
        assert (await js.stream_info("HEARTBEATS")).config.max_age == 24 * 3600
        for bucket in BUCKETS:
            await js.key_value(bucket)
        # Run again with a shorter HEARTBEATS: the stream there is brought to it.
        again = await asyncio.to_thread(run_command, "setup", env={**env, "HEARTBEAT_STREAM_HOURS": "2"})
        assert again.returncode == 0, again.stderr
        assert (await js.stream_info("HEARTBEATS")).config.max_age == 2 * 3600
        applied = [
            msgspec.json.decode(line) for line in again.stderr.splitlines() if '"schema_ready"' in line
        ]
        assert sorted(line["schema"] for line in applied) == sorted(MIGRATIONS)
        assert all(line["applied"] == [] for line in applied)  # nothing twice
        assert await applied_versions(empty_database) == expected
    finally:
        await nc.close()


async def test_a_service_opens_only_once_the_setup_step_is_done(settings, empty_database):
    """Its migrations applied, and the streams and buckets made: a service may make neither."""
    settings = msgspec.structs.replace(settings, database_url=empty_database)
    runner = web.AppRunner(create_registry(settings))
    starting = asyncio.create_task(runner.setup())
    try:
        await asyncio.sleep(1.5)
        assert not starting.done()  # waiting: a rollout may start pods before the setup Job is done
        await migrate(empty_database)
        await asyncio.sleep(1.5)
        assert not starting.done()  # the streams are not there yet
        await setup(settings)
        await asyncio.wait_for(starting, timeout=10)
    finally:
        if not starting.done():
            starting.cancel()
        await runner.cleanup()


async def test_a_stop_while_waiting_for_migrations_ends_the_service_at_once(
    settings, empty_database, tmp_path
):
    """A rollout that is called off while the new pods still wait for the setup Job: SIGTERM ends
    the wait (and the process, with 0) instead of running into the kill after the grace period."""
    log = tmp_path / "registry.log"
    process = spawn("registry", msgspec.structs.replace(settings, database_url=empty_database), log)
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while "waiting_for_migrations" not in log.read_text():
            assert process.poll() is None and asyncio.get_running_loop().time() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 10) == 0, log.read_text()
        assert "stopped_while_starting" in log.read_text()
    finally:
        process.kill()


async def test_the_gateway_needs_no_database(settings, sockets):
    await make_topology(settings)
    runner = web.AppRunner(create_gateway(msgspec.structs.replace(settings, database_url="")))
    await runner.setup()
    try:
        port = sockets["device-gateway"].getsockname()[1]
        await web.SockSite(runner, sockets.pop("device-gateway")).start()
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert response.status == 200, await response.text()
    finally:
        await runner.cleanup()


async def test_a_service_with_tables_refuses_to_start_without_a_database(settings):
    runner = web.AppRunner(create_registry(msgspec.structs.replace(settings, database_url="")))
    with pytest.raises(SystemExit, match="DATABASE_URL"):
        await runner.setup()
    await runner.cleanup()


def test_the_command_line_names_its_commands_and_refuses_others():
    for args in [(), ("nonsense",), ("registry", "extra")]:
        result = run_command(*args)
        assert result.returncode != 0
        assert (
            "device-gateway" in result.stderr and "setup" in result.stderr and "signing-key" in result.stderr
        )
    result = run_command("registry", env={"NATS_URL": ""})
    assert result.returncode != 0 and "NATS_URL" in result.stderr


def test_signing_key_prints_a_key_and_its_public_key_as_settings():
    result = run_command("signing-key")
    assert result.returncode == 0, result.stderr
    settings = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert set(settings) == {"TOKEN_SIGNING_KEY", "TOKEN_VERIFY_KEYS"}
    assert settings["TOKEN_VERIFY_KEYS"] == public_key_of(settings["TOKEN_SIGNING_KEY"])


def start_heartbeat(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The heartbeat service as its own process with only ``env``, logging to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services", "heartbeat"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_sigterm_ends_open_event_streams_and_the_service_exits_cleanly(stack, tmp_path):
    """A rollout's SIGTERM (after the preStop delay): the heartbeat service ends its SSE streams —
    clients reconnect elsewhere with Last-Event-ID — and exits 0 well within the grace period."""
    tenant = await stack.tenant()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "heartbeat.log"
    env = {
        **os.environ,
        "DATABASE_URL": stack.settings.database_url,
        "NATS_URL": ",".join(stack.settings.nats_url),
        "NATS_PASSWORD": stack.settings.nats_password,
        "TOKEN_VERIFY_KEYS": public_key_of(stack.settings.token_signing_key),
        "HEARTBEAT_PORT": str(port),
        "HOST": "127.0.0.1",
        "LOG_FORMAT": "json",
    }
    service = start_heartbeat(env, log)
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                try:
                    async with http.get(url + "/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    assert service.poll() is None, log.read_text()
                    return False

            await stack.eventually(ready, timeout=30, interval=0.1)
            headers = {"Authorization": f"Bearer {tenant['token']}"}
            async with http.get(url + "/v1/heartbeats/stream", headers=headers) as stream:
                assert stream.status == 200
                assert await stream.content.readline() == b"retry: 2000\n"
                service.send_signal(signal.SIGTERM)
                # Well before aiohttp's own 10 s drain limit would cut it.
                async with asyncio.timeout(5):
                    await stream.content.read()  # returns when the server has ended the stream
        assert await asyncio.to_thread(service.wait, 20) == 0, log.read_text()
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
