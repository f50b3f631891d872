"""The gateway's two hot paths: polls answered without the router (shared/direct_routes.py) and
counted in the metrics by tallies (shared/request_metrics.py), and reports stored in JetStream
with their acks awaited on one inbox (services/device_gateway/acks.py)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import aiohttp
import msgspec
import nats.errors
import prometheus_client
import pytest
from aiohttp import web
from nats.js.api import RawStreamMsg

from services.device_gateway.acks import Acks, NotStored
from services.device_gateway.projections import DeviceKey, pack_key_entry
from shared import bus, request_metrics
from shared.app import base_app
from shared.app_keys import IN_FLIGHT, SERVICE, InFlight
from shared.bus_access import SETUP_USER
from shared.direct_routes import DirectAnswer, route_directly
from shared.events import Heartbeat, heartbeat_decoder
from shared.health import metrics
from shared.http import add_routes, read_json
from shared.projections import DeviceKeyEntry
from shared.request_metrics import RouteTally
from shared.settings import Settings
from tests.stack import make_topology, raw_exchange

# ---- direct routes -------------------------------------------------------------------------------


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def test_exact_paths_skip_the_router_and_see_what_it_would_have_given() -> None:
    seen: list[tuple[str, object, object, dict[str, str]]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.method, request.app, request.match_info.route, dict(request.match_info)))
        return web.Response(text=request.method)

    app = web.Application()
    config = app.router.add_get("/v1/device/config", handler)
    heartbeat = app.router.add_post("/v1/device/heartbeat", handler)
    app.router.add_get("/v1/device/content/{name}", handler)
    route_directly(app)
    resolved: list[str] = []
    resolve = app.router.resolve

    async def counted(request: web.Request) -> web.UrlMappingMatchInfo:
        resolved.append(request.raw_path)
        return await resolve(request)

    app.router.resolve = counted  # type: ignore[method-assign]
    runner, url = await _serve(app)
    try:
        async with aiohttp.ClientSession(url) as http:
            for method, path in [("GET", "/v1/device/config"), ("POST", "/v1/device/heartbeat")]:
                async with http.request(method, path) as response:
                    assert response.status == 200 and await response.text() == method
            assert resolved == []  # neither went through the router
            assert seen == [("GET", app, config, {}), ("POST", app, heartbeat, {})]
            # Everything else still goes through it, answered as it always was.
            async with http.head("/v1/device/config") as response:
                assert response.status == 200
            async with http.get("/v1/device/config?x=1") as response:
                assert response.status == 200
            async with http.get("/v1/device/content/a.png") as response:
                assert response.status == 200
            assert seen[-1][3] == {"name": "a.png"}
            async with http.post("/v1/device/config") as response:
                assert response.status == 405
            async with http.get("/v1/device/heartbeat") as response:
                assert response.status == 405
            async with http.get("/v1/device%2Fconfig") as response:  # one segment: no route
                assert response.status == 404
            assert resolved == [
                "/v1/device/config",
                "/v1/device/config?x=1",
                "/v1/device/content/a.png",
                "/v1/device/config",
                "/v1/device/heartbeat",
                "/v1/device%2Fconfig",
            ]
    finally:
        await runner.cleanup()


async def test_a_request_expecting_100_continue_goes_through_the_router() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app = web.Application()
    app.router.add_post("/v1/device/heartbeat", handler)
    route_directly(app)
    runner, url = await _serve(app)
    try:
        async with (
            aiohttp.ClientSession(url) as http,
            http.post("/v1/device/heartbeat", data=b"{}", expect100=True) as response,
        ):
            assert response.status == 200 and await response.read() == b"{}"
    finally:
        await runner.cleanup()


# ---- reports, their acks on one inbox ------------------------------------------------------------


async def _stored(settings: Settings) -> list[RawStreamMsg]:
    nc = await bus.connect(settings, SETUP_USER)
    js = nc.jetstream()
    count = (await js.stream_info("HEARTBEATS")).state.messages
    messages = [await js.get_msg("HEARTBEATS", seq) for seq in range(1, count + 1)]
    await nc.close()
    return messages


def _subject() -> str:
    return f"heartbeat.{uuid.uuid4()}.{uuid.uuid4()}"


async def test_reports_in_flight_together_each_return_once_stored(settings: Settings) -> None:
    await make_topology(settings)
    nc = await bus.connect(settings, "device-gateway")
    acks = Acks()
    await acks.start(nc)
    payloads = [b"%d" % index for index in range(20)]
    try:
        await asyncio.gather(*[acks.store(_subject(), payload) for payload in payloads])
        await acks.store(
            _subject(), b"traced", headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
        )
    finally:
        await acks.stop()
        await nc.close()
    stored = await _stored(settings)
    assert [message.data for message in stored] == [*payloads, b"traced"]
    assert not any(message.headers for message in stored[:-1])  # the messages as they were sent
    assert stored[-1].headers == {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}


async def test_a_report_the_stream_refuses_or_no_stream_takes_is_not_stored(settings: Settings) -> None:
    await make_topology(settings)
    nc = await bus.connect(settings, SETUP_USER)  # may publish where no stream listens
    acks = Acks()
    await acks.start(nc)
    try:
        with pytest.raises(NotStored, match="stream"):
            await acks.store(_subject(), b"x", headers={"Nats-Expected-Stream": "ANOTHER"})
        with pytest.raises(NotStored):
            await acks.store("nowhere.at.all", b"x")
        await acks.store(_subject(), b"stored")  # the inbox still answers
        # An ack naming a stream called "error" is still an ack: {"stream":"error","seq":1}.
        await nc.jetstream().add_stream(name="error", subjects=["acks-test.error"])
        await acks.store("acks-test.error", b"in the stream named error")
    finally:
        await acks.stop()
        await nc.close()
    assert [message.data for message in await _stored(settings)] == [b"stored"]
    with pytest.raises(nats.errors.ConnectionClosedError):
        await acks.store(_subject(), b"after the stop")


async def test_a_report_nobody_acks_fails_after_its_timeout(settings: Settings) -> None:
    await make_topology(settings)
    nc = await bus.connect(settings, SETUP_USER)  # may publish where no stream listens
    listener = await bus.connect(settings, SETUP_USER)  # another connection: ours hears not itself
    await listener.subscribe("silent.reports")  # takes the message, never answers
    await listener.flush()
    acks = Acks()
    await acks.start(nc)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        with pytest.raises(TimeoutError):
            await acks.store("silent.reports", b"x", timeout=0.3)
        waited = loop.time() - started
        await acks.store(_subject(), b"stored")  # the others are not held up
    finally:
        await acks.stop()
        await listener.close()
        await nc.close()
    # Never before its timeout; soon after it (timeouts are checked a few times a second), and not
    # at the store's default timeout (2 s). Loose: a loaded machine stretches the checks' timer.
    assert 0.3 <= waited < 1.9


# ---- a report's body, read from the buffer when it has all arrived -------------------------------


class _Note(msgspec.Struct):
    note: str


async def _post_in_one_write(url: str, body: bytes, *, chunked: bool = False) -> tuple[int, dict]:
    """POST ``body`` with headers and body in one write: it has all arrived when the handler runs."""
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
    payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body
    status, answer, _ = await raw_exchange(
        int(url.rpartition(":")[2]),
        b"POST /note HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + framing
        + b"\r\n\r\n"
        + payload,
    )
    return status, msgspec.json.decode(answer)


async def test_a_body_read_whole_from_the_buffer_is_still_bounded_and_checked(settings: Settings) -> None:
    decoder = msgspec.json.Decoder(_Note)

    async def note(request: web.Request) -> web.Response:
        return web.json_response({"note": (await read_json(request, decoder)).note})

    app = base_app("test", msgspec.structs.replace(settings, max_body_bytes=1024))
    add_routes(app, [("POST", "/note", note, True)])
    runner, url = await _serve(app)
    try:
        assert await _post_in_one_write(url, b'{"note": "hi"}') == (200, {"note": "hi"})
        too_long = b'{"note": "%s"}' % (b"x" * 2000)
        for chunked in (False, True):
            status, answer = await _post_in_one_write(url, too_long, chunked=chunked)
            assert (status, answer["error"]) == (413, "payload_too_large"), (chunked, answer)
        status, answer = await _post_in_one_write(url, b'{"note": "a\\u0000b"}')
        assert (status, answer["error"]) == (400, "invalid_request"), answer
        assert "note must not contain the NUL character" in answer["message"], answer
    finally:
        await runner.cleanup()


# ---- request metrics, tallied ------------------------------------------------------------------


def _sample(name: str, **labels: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


async def test_requests_are_in_the_metrics_by_the_scrape_as_they_always_were() -> None:
    service = f"tally-{uuid.uuid4().hex[:8]}"
    app = web.Application()
    app[SERVICE], app[IN_FLIGHT] = service, InFlight()

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.03)  # in the 0.05 bucket
        return web.Response(status=304)

    async def fast(request: web.Request) -> web.Response:
        return web.Response(status=int(request.query.get("status", "200")))

    add_routes(app, [("GET", "/slow", slow, True), ("GET", "/fast", fast, True)])
    add_routes(app, [("GET", "/metrics", metrics, True)])
    route_directly(app)
    runner, url = await _serve(app)
    try:
        async with aiohttp.ClientSession(url) as http:
            for path in ["/slow", "/fast", "/fast", "/fast?status=404"]:
                async with http.get(path) as response:
                    await response.read()
            async with http.get("/metrics") as response:  # a scrape brings them up to date
                scraped = await response.text()
    finally:
        await runner.cleanup()
    requests = "http_requests_total"
    assert _sample(requests, service=service, method="GET", route="/slow", status="304") == 1
    assert _sample(requests, service=service, method="GET", route="/fast", status="200") == 2
    assert _sample(requests, service=service, method="GET", route="/fast", status="404") == 1
    buckets = "http_request_duration_seconds_bucket"
    assert _sample(buckets, service=service, route="/slow", le="0.025") == 0
    assert _sample(buckets, service=service, route="/slow", le="0.05") == 1
    assert _sample(buckets, service=service, route="/fast", le="+Inf") == 3
    assert _sample("http_request_duration_seconds_count", service=service, route="/fast") == 3
    assert 0.03 <= _sample("http_request_duration_seconds_sum", service=service, route="/slow") < 1
    assert (
        f'http_requests_total{{method="GET",route="/fast",service="{service}",status="200"}} 2.0' in scraped
    )


async def test_requests_reach_the_metrics_within_a_second_without_a_scrape() -> None:
    service = f"tally-{uuid.uuid4().hex[:8]}"
    tally = RouteTally(service, "GET", "/x")
    tally.record(200, 0.0001)
    assert _sample("http_requests_total", service=service, method="GET", route="/x", status="200") == 0
    await asyncio.sleep(request_metrics.FLUSH_SECONDS + 0.2)
    assert _sample("http_requests_total", service=service, method="GET", route="/x", status="200") == 1
    assert _sample("http_request_duration_seconds_bucket", service=service, route="/x", le="0.0005") == 1


# ---- answers written directly --------------------------------------------------------------------


async def _exchange(url: str, request: bytes) -> bytes:
    """What the server sends back on a raw connection for ``request``, until it closes or pauses."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 0.3):
            received += chunk
    except TimeoutError:
        pass  # kept alive: all there is has come
    writer.close()
    return received


def _without_date(answer: bytes) -> bytes:
    return b"\r\n".join(line for line in answer.split(b"\r\n") if not line.startswith(b"Date: "))


@pytest.mark.parametrize("status", [200, 202, 304])
@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /direct HTTP/1.1\r\nHost: x\r\n",
        b"GET /direct HTTP/1.1\r\nHost: x\r\nConnection: close\r\n",
        b"GET /direct HTTP/1.0\r\n",
        b"GET /direct HTTP/1.0\r\nConnection: keep-alive\r\n",
        b"HEAD /direct HTTP/1.1\r\nHost: x\r\n",
        b"POST /direct HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n",
    ],
)
async def test_an_answer_written_directly_is_the_bytes_aiohttp_writes(
    status: int, request_line: bytes
) -> None:
    body = None if status == 304 else b'{"status":"accepted"}'
    headers = {"ETag": '"abc"', "Cache-Control": "private, no-cache"}

    async def direct(request: web.Request) -> web.StreamResponse:
        answer = DirectAnswer(status, dict(headers), body)
        answer.headers["X-Request-ID"] = "r1"  # as instrumented adds it
        return answer

    async def aiohttps(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=status, headers=dict(headers), body=body)
        if body is not None:
            response.content_type = "application/json"
        response.headers["X-Request-ID"] = "r1"
        return response

    answers = []
    for handler in (direct, aiohttps):
        app = web.Application()
        app.router.add_route("*", "/direct", handler)
        runner, url = await _serve(app)
        try:
            request = request_line + b"\r\n" + (b"{}" if request_line.startswith(b"POST") else b"")
            answers.append(await _exchange(url, request * 2))  # two: does the connection stay?
        finally:
            await runner.cleanup()
    direct_answer, aiohttp_answer = answers
    assert direct_answer.startswith(b"HTTP/1.")
    assert sorted(_without_date(direct_answer).split(b"\r\n")) == sorted(
        _without_date(aiohttp_answer).split(b"\r\n")
    )
    assert direct_answer.count(b"Date: ") == aiohttp_answer.count(b"Date: ")


async def test_a_header_holding_a_line_break_is_not_written_as_aiohttp_does_not() -> None:
    header = {"ETag": '"a"\r\nSet-Cookie: x=1'}

    async def direct(request: web.Request) -> web.StreamResponse:
        return DirectAnswer(304, dict(header))

    async def aiohttps(request: web.Request) -> web.StreamResponse:
        return web.Response(status=304, headers=dict(header))

    app = web.Application()
    app.router.add_get("/direct", direct)
    app.router.add_get("/aiohttp", aiohttps)
    runner, url = await _serve(app)
    try:
        answers = [
            await _exchange(url, b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            for path in (b"direct", b"aiohttp")
        ]
    finally:
        await runner.cleanup()
    assert answers == [b"", b""]  # the connection closed, nothing written


def test_a_heartbeat_made_of_the_ids_texts_is_the_message_made_of_their_uuids() -> None:
    entry = DeviceKeyEntry(
        device_id=uuid.uuid4(), screen_id=uuid.uuid4(), tenant_id=uuid.uuid4(), status="active"
    )
    device = DeviceKey(pack_key_entry(entry))
    tenant, screen, device_id = device.id_texts()
    assert (tenant, screen, device_id) == (str(entry.tenant_id), str(entry.screen_id), str(entry.device_id))
    received_at = datetime.now(UTC)
    as_texts = Heartbeat(
        tenant_id=tenant,  # type: ignore[arg-type]
        screen_id=screen,  # type: ignore[arg-type]
        device_id=device_id,  # type: ignore[arg-type]
        received_at=received_at,
        uptime_seconds=5,
        free_storage_mb=12.0,
    )
    as_uuids = Heartbeat(
        tenant_id=entry.tenant_id,
        screen_id=entry.screen_id,
        device_id=entry.device_id,
        received_at=received_at,
        uptime_seconds=5,
        free_storage_mb=12.0,
    )
    assert msgspec.json.encode(as_texts) == msgspec.json.encode(as_uuids)
    assert heartbeat_decoder.decode(msgspec.json.encode(as_texts)) == as_uuids
