"""What every service offers: health, readiness, metrics, its OpenAPI document, request ids."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
import pytest
import structlog
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from shared import tasks
from shared.logging import merge_log_context
from shared.tasks import background, finished

SERVICES = ("registry", "provisioning", "device-gateway", "heartbeat")


@pytest.mark.parametrize("service", SERVICES)
async def test_health_readiness_metrics_and_openapi(stack, service):
    async with aiohttp.ClientSession(stack.url(service)) as http:
        async with http.get("/healthz") as response:
            assert (response.status, await response.json()) == (200, {"status": "ok"})
        async with http.get("/readyz?verbose") as response:
            body = await response.json()
            assert response.status == 200 and body["status"] == "ready"
            assert body["dependencies"]["nats"]["up"] is True
            assert ("postgres" in body["dependencies"]) is (service != "device-gateway")
        async with http.get("/metrics") as response:
            assert response.status == 200
            names = {family.name for family in text_string_to_metric_families(await response.text())}
            assert {"http_requests", "http_request_duration_seconds"} <= names
        async with http.get("/openapi.json") as response:
            document = await response.json()
            assert document["openapi"] == "3.1.0"


async def test_the_entry_point_serves_the_whole_api_document(stack):
    status, document, _ = await stack.call("GET", "/openapi.json")
    assert status == 200
    paths = document["paths"]
    operations = [operation for path in paths.values() for operation in path.values()]
    ids = [operation["operationId"] for operation in operations]
    assert len(ids) == len(set(ids)), sorted(ids)
    assert all(operation.get("tags") for operation in operations)  # each in its section
    for path, method in [
        ("/v1/tenants", "post"),
        ("/oauth/token", "post"),
        ("/v1/venues", "get"),
        ("/v1/screens/{id}/playlist", "put"),
        ("/v1/screens/{id}/config", "patch"),
        ("/v1/devices/provisioning-codes", "post"),
        ("/devices/register", "post"),
        ("/v1/devices/{id}/revoke", "post"),
        ("/v1/device/playlist", "get"),
        ("/v1/device/heartbeat", "post"),
        ("/v1/device/events", "post"),
    ]:
        assert method in paths[path], (path, method)
    registration = document["components"]["schemas"]["Registration"]
    assert registration["required"] == ["pairingCode", "deviceInfo"]


async def test_a_database_away_leaves_the_replica_ready_and_shows_in_the_verbose_document(stack):
    """The test's database refuses connections and its sessions end: what the registry sees of a
    database that went away (its probe has a connection of its own, so both must go)."""
    base, _, name = stack.settings.database_url.rpartition("/")
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )

        async def noticed() -> bool:
            async with (
                aiohttp.ClientSession(stack.url("registry")) as http,
                http.get("/readyz?verbose") as response,
            ):
                body = await response.json()
            assert response.status == 200 and body["status"] == "ready", body
            return body["dependencies"]["postgres"]["up"] is False

        await stack.eventually(noticed, timeout=15)
        async with aiohttp.ClientSession(stack.url("registry")) as http, http.get("/readyz") as response:
            assert (response.status, await response.json()) == (200, {"status": "ready", "checks": {}})
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()


async def test_the_request_id_is_echoed_and_generated(stack):
    _, _, response = await stack.call("GET", "/v1/venues", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    generated = set()
    for _ in range(3):
        _, _, response = await stack.call("GET", "/v1/venues")
        generated.add(response.headers["X-Request-ID"])
    assert len(generated) == 3 and all(len(request_id) >= 12 for request_id in generated)
    # Not a plain token (spaces, a forged log field, a thousand characters): ours instead.
    for sent in ("a b", 'x" level=error', "r" * 1000, "caf\u00e9"):
        _, _, response = await stack.call("GET", "/v1/venues", headers={"X-Request-ID": sent})
        echoed = response.headers["X-Request-ID"]
        assert echoed != sent and len(echoed) >= 12 and echoed.isalnum()


async def test_provisioning_asks_registry_about_a_screen_it_has_not_heard_of(stack):
    tenant = await stack.tenant()
    screen = await stack.screen(tenant["token"])

    async def copied():
        return await conn.fetchval(
            "SELECT version FROM provisioning.screens WHERE id = $1::uuid", screen["id"]
        )

    conn = await asyncpg.connect(stack.settings.database_url)
    try:
        assert await stack.eventually(copied) == 1
        # As if the screen's event had not arrived yet:
        await conn.execute("DELETE FROM provisioning.screens WHERE id = $1::uuid", screen["id"])
        other = await stack.tenant("Other")
        status, body, _ = await stack.call(
            "POST", "/v1/devices/provisioning-codes", token=other["token"], json={"screenId": screen["id"]}
        )
        assert (status, body["error"]) == (404, "not_found")
        code = await stack.code(tenant["token"], screen["id"])
        assert code["screenId"] == screen["id"]
        assert (
            await conn.fetchval(
                "SELECT tenant_id::text FROM provisioning.screens WHERE id = $1::uuid", screen["id"]
            )
            == tenant["id"]
        )
    finally:
        await conn.close()
    status, registered = await stack.register(code["code"])
    assert status == 201 and registered["config"]["syncIntervalMinutes"] == 5


async def test_a_failed_background_task_is_logged_and_started_again():
    runs: list[int] = []
    restarted = asyncio.Event()

    async def flaky(app: web.Application) -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("boom")
        restarted.set()
        await asyncio.Event().wait()

    app = web.Application()
    app.cleanup_ctx.append(background("flaky", flaky))
    runner = web.AppRunner(app)
    with structlog.testing.capture_logs() as logs:
        await runner.setup()
        try:
            await asyncio.wait_for(restarted.wait(), timeout=5)
        finally:
            await runner.cleanup()
    assert runs == [0, 1]
    assert [(e["event"], e["task"]) for e in logs if e["event"].startswith("background")] == [
        ("background_task_failed", "flaky")
    ]


async def test_a_background_task_that_loses_a_cancellation_still_stops():
    """Python 3.11's wait_for (inside nats-py's fetch) can swallow a cancellation; the shutdown
    must end all the same instead of waiting for the task forever."""
    cancels: list[int] = []

    async def stubborn(app: web.Application) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels.append(1)
                if len(cancels) == 1:
                    continue  # the lost cancellation: the loop goes on as if nothing happened
                raise

    app = web.Application()
    app.cleanup_ctx.append(background("stubborn", stubborn))
    runner = web.AppRunner(app)
    await runner.setup()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(runner.cleanup(), timeout=10)
    assert len(cancels) == 2


async def test_a_unit_of_work_in_hand_at_the_stop_is_finished_first(monkeypatch):
    """A consumer's batch is stored and acked before its task stops (not redelivered after the
    ack wait); one that cannot finish is given up after FINISH_SECONDS."""
    done: list[str] = []

    async def batch(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        done.append(name)

    async def consumer(name: str, seconds: float) -> None:
        await finished(batch(name, seconds))
        done.append(f"{name} went on")  # must not: the stop goes on once the batch is done

    monkeypatch.setattr(tasks, "FINISH_SECONDS", 1.5)
    quick = asyncio.create_task(consumer("quick", 0.3))
    endless = asyncio.create_task(consumer("endless", 3600))
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    await asyncio.gather(tasks.stop(quick), tasks.stop(endless))  # cancels every second
    assert done == ["quick"]
    assert quick.cancelled() and endless.cancelled()
    assert 1.4 < asyncio.get_running_loop().time() - started < 3


async def test_log_lines_carry_the_request_and_tenant_and_nothing_leaks_to_the_next_request(stack):
    tenant = await stack.tenant()
    with structlog.testing.capture_logs(processors=[merge_log_context]) as logs:
        # Both calls on one keep-alive connection, so one task of the service serves them.
        await stack.call("GET", "/v1/venues", token=tenant["token"], headers={"X-Request-ID": "first"})
        await stack.call("GET", "/v1/venues", headers={"X-Request-ID": "second"})
    lines = {e["request_id"]: e for e in logs if e["event"] == "request" and e.get("path") == "/v1/venues"}
    assert lines["first"]["tenant_id"] == tenant["id"] and lines["first"]["status"] == 200
    assert "tenant_id" not in lines["second"] and lines["second"]["status"] == 401
