"""W3C Trace Context through the whole system: a request's traceparent (or a new trace) on its log
lines and its response, on the events it causes and on their consumers' log lines, on a TV's
reports, and on the webhooks sent for them; anything but a valid traceparent starts a new trace."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
import structlog
from multidict import CIMultiDict
from nats.aio.msg import Msg

from shared import bus, trace_context
from shared.bus_access import SETUP_USER
from shared.events import subject_of
from shared.logging import merge_log_context
from shared.routing import DEVICE_TOKEN_PATH
from tests.stack import Stack
from tests.webhooks import Receiver, add_endpoint, command_failures

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
OURS = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01")
INVALID = [
    f"00-{TRACE_ID}-{PARENT_ID}-1",  # wrong length
    f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
    SENT.upper(),
    f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero ids
    f"00-{TRACE_ID}-{'0' * 16}-01",
    f"ff-{TRACE_ID}-{PARENT_ID}-01",  # the forbidden version
    f"00-{TRACE_ID}-{PARENT_ID}-01-more",  # version 00 has exactly four fields
    f"01-{TRACE_ID}-{PARENT_ID}-01.more",  # a later version's flags end at a dash
    f"00_{TRACE_ID}_{PARENT_ID}_01",
    "",
]


def ours(response_traceparent: str) -> tuple[str, str]:
    """The trace id and span id of the traceparent we answered with (version 00, sampled)."""
    match = OURS.fullmatch(response_traceparent)
    assert match is not None, response_traceparent
    return match.group(1), match.group(2)


@pytest.mark.parametrize("value", INVALID)
def test_an_invalid_traceparent_is_not_read(value):
    assert trace_context.parse(value) is None
    span = trace_context.child_of(value, "vendor=kept-only-with-a-valid-parent")
    assert span.trace_id != TRACE_ID and span.tracestate is None
    assert ours(span.traceparent) == (span.trace_id, span.span_id)


def test_a_valid_traceparent_is_continued_and_a_later_version_read_by_its_first_fields():
    assert trace_context.parse(SENT) == (TRACE_ID, PARENT_ID, "01")
    assert trace_context.parse(f"00-{TRACE_ID}-{PARENT_ID}-00") == (TRACE_ID, PARENT_ID, "00")
    # A later version may add fields; its flags are kept as far as version 00 defines them.
    assert trace_context.parse(f"cc-{TRACE_ID}-{PARENT_ID}-09-what-the-future-holds") == (
        TRACE_ID,
        PARENT_ID,
        "01",
    )
    span = trace_context.child_of(f"02-{TRACE_ID}-{PARENT_ID}-00", "a=1, b=2")
    assert (span.trace_id, span.flags, span.tracestate) == (TRACE_ID, "00", "a=1, b=2")
    assert span.span_id != PARENT_ID and span.traceparent == f"00-{TRACE_ID}-{span.span_id}-00"


def test_a_tracestate_is_passed_on_within_the_limits():
    def passed(tracestate: str) -> str | None:
        return trace_context.child_of(SENT, tracestate).tracestate

    assert passed("a=1,b=2") == "a=1,b=2"
    assert passed(",".join(f"k{i}=v" for i in range(33))) is None  # more than 32 members
    assert passed("a=1\x01") is None
    # Too long: a member over 128 characters goes first, then members from the end.
    long_member, members = "big=" + "x" * 200, [f"k{i:02d}={'v' * 40}" for i in range(10)]
    kept = passed(",".join([members[0], long_member, *members[1:]]))
    assert kept == ",".join(members[: len(kept.split(","))]) and 400 < len(kept) <= 512  # type: ignore[union-attr]


@pytest.fixture
def logs() -> Any:
    with structlog.testing.capture_logs(processors=[merge_log_context]) as captured:
        yield captured


@contextlib.asynccontextmanager
async def messages(stack: Stack, subject: str, stream: str) -> AsyncIterator[list[Msg]]:
    """The messages of ``subject`` from now on, as a list that fills while the test runs."""
    nc = await bus.connect(stack.settings, SETUP_USER)
    received: list[Msg] = []

    async def keep(message: Msg) -> None:
        received.append(message)

    await nc.jetstream().subscribe(subject, stream=stream, ordered_consumer=True, cb=keep)
    try:
        yield received
    finally:
        await nc.close()


async def test_a_request_continues_the_callers_trace_into_its_logs_its_answer_its_events_and_their_consumers(
    stack, logs
):
    tenant = await stack.tenant()
    status, venue, _ = await stack.call("POST", "/v1/venues", token=tenant["token"], json={"name": "HQ"})
    assert status == 201, venue
    async with messages(stack, "registry.screen.created", "EVENTS") as created:
        status, screen, response = await stack.call(
            "POST",
            "/v1/screens",
            token=tenant["token"],
            json={"venueId": venue["id"], "name": "Lobby"},
            headers={"traceparent": SENT, "tracestate": "vendor=opaque"},
        )
        assert status == 201, screen
        trace_id, span_id = ours(response.headers["traceparent"])
        assert trace_id == TRACE_ID and span_id != PARENT_ID
        assert "tracestate" not in response.headers

        request_lines = [e for e in logs if e["event"] == "request" and e.get("path") == "/v1/screens"]
        assert [(e["trace_id"], e["span_id"]) for e in request_lines] == [(TRACE_ID, span_id)]

        # The event the request caused: queued in its transaction, published as a child of its span.
        async def published() -> bool:
            return bool(created)

        await stack.eventually(published)
        assert created[0].headers is not None
        assert created[0].headers["traceparent"] == f"00-{TRACE_ID}-{span_id}-01"
        assert created[0].headers["tracestate"] == "vendor=opaque"
        assert created[0].headers["X-Request-ID"] == response.headers["X-Request-ID"]

    # Each service that applies it logs the trace, under a span of its own.
    async def applied() -> list[dict[str, Any]]:
        return [
            e
            for e in logs
            if e["event"] == "event_applied"
            and e.get("subject") == "registry.screen.created"
            and e.get("trace_id") == TRACE_ID
        ]

    lines = await stack.eventually(applied)
    assert all(len(e["span_id"]) == 16 and e["span_id"] not in (span_id, PARENT_ID) for e in lines)


async def test_a_call_to_another_service_carries_the_requests_trace(stack, logs):
    # A TV polling for its token: registry's /oauth/token asks provisioning, which answers
    # authorization_pending; provisioning's log line of that call is in the caller's trace.
    status, started, _ = await stack.call(
        "POST", "/oauth/device_authorization", data={"client_id": "signage-player"}
    )
    assert status == 200, started
    grant = "urn:ietf:params:oauth:grant-type:device_code"
    form = {"grant_type": grant, "device_code": started["device_code"], "client_id": "signage-player"}
    status, body, response = await stack.call(
        "POST", "/oauth/token", data=form, headers={"traceparent": SENT}
    )
    assert status == 400 and body["error"] == "authorization_pending", body
    trace_id, registry_span = ours(response.headers["traceparent"])
    assert trace_id == TRACE_ID
    (line,) = [e for e in logs if e["event"] == "request" and e.get("path") == DEVICE_TOKEN_PATH]
    assert line["trace_id"] == TRACE_ID and line["span_id"] not in (registry_span, PARENT_ID)


async def test_anything_but_a_valid_traceparent_starts_a_new_trace_and_is_not_echoed(stack, logs):
    tenant = await stack.tenant()
    seen = set()
    for sent in [*INVALID, None]:
        headers = {} if sent is None else {"traceparent": sent, "tracestate": "vendor=opaque"}
        status, _, response = await stack.call("GET", "/v1/venues", token=tenant["token"], headers=headers)
        assert status == 200
        answered = response.headers["traceparent"]
        trace_id, span_id = ours(answered)
        assert trace_id != TRACE_ID and answered != sent
        line = next(
            e for e in logs if e["event"] == "request" and e["request_id"] == response.headers["X-Request-ID"]
        )
        assert (line["trace_id"], line["span_id"]) == (trace_id, span_id)
        seen.add(trace_id)
    assert len(seen) == len(INVALID) + 1  # a trace of its own each time

    # Two traceparent headers make no valid one (straight to the service: a proxy may join them).
    twice = CIMultiDict([("traceparent", SENT), ("traceparent", f"00-{'1' * 32}-{PARENT_ID}-01")])
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.url('registry')}/healthz", headers=twice) as response,
    ):
        assert response.status == 200
        assert ours(response.headers["traceparent"])[0] not in (TRACE_ID, "1" * 32)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{stack.url('registry')}/healthz", headers={"traceparent": SENT}) as response,
    ):
        assert ours(response.headers["traceparent"])[0] == TRACE_ID


async def test_errors_and_a_tvs_reports_carry_the_trace(stack):
    tenant = await stack.tenant()
    status, _, response = await stack.call("GET", "/v1/venues", headers={"traceparent": SENT})
    assert status == 401 and ours(response.headers["traceparent"])[0] == TRACE_ID
    _, registered = await stack.paired_device(tenant["token"])
    key = registered["apiKey"]
    event = {"type": "proof_of_play", "at": "2026-11-23T08:00:00Z", "data": {"itemIndex": 0}}
    async with messages(stack, "device_events.>", "DEVICE_EVENTS") as reported:

        async def accepted() -> bool:  # once the gateway knows the TV's key
            status, _, _ = await stack.call(
                "POST",
                "/v1/device/events",
                token=key,
                json={"events": [event]},
                headers={"traceparent": SENT},
            )
            return status == 202 and bool(reported)

        await stack.eventually(accepted)
        assert reported[-1].headers is not None
        trace_id, span_id = ours(reported[-1].headers["traceparent"])
        assert trace_id == TRACE_ID and span_id != PARENT_ID


async def test_webhooks_continue_the_trace_of_their_event_and_of_a_ping(stack):
    receiver = Receiver()
    await receiver.start()
    try:
        tenant = await stack.tenant()
        await add_endpoint(stack.settings, tenant["id"], receiver.url, ["command.failed"])
        # An event on the bus as an outbox publishes it: with its traceparent and tracestate.
        (event,) = command_failures(tenant["id"], 1)
        nc = await bus.connect(stack.settings, SETUP_USER)
        try:
            await nc.jetstream().publish(
                subject_of(event),
                msgspec.json.encode(event),
                headers={"Nats-Msg-Id": str(event.event_id), "traceparent": SENT, "tracestate": "v=1"},
            )
        finally:
            await nc.close()

        async def delivered() -> bool:
            return bool(receiver.requests)

        await stack.eventually(delivered, timeout=10)
        sent = receiver.requests[0].headers
        trace_id, span_id = ours(sent["traceparent"])
        assert (trace_id, sent["tracestate"], sent["webhook-id"]) == (TRACE_ID, "v=1", str(event.event_id))
        assert span_id != PARENT_ID

        # An admin's ping: a child of the ping request's span.
        status, webhook, _ = await stack.call(
            "POST",
            "/v1/webhooks",
            token=tenant["token"],
            json={"url": receiver.url, "events": ["screen.offline"]},
        )
        assert status == 201, webhook
        other_trace = uuid.uuid4().hex
        status, _, response = await stack.call(
            "POST",
            f"/v1/webhooks/{webhook['id']}/ping",
            token=tenant["token"],
            headers={"traceparent": f"00-{other_trace}-{PARENT_ID}-00"},
        )
        assert status == 202
        ping_span = response.headers["traceparent"].split("-")[2]

        async def pinged() -> bool:
            return len(receiver.requests) == 2

        await stack.eventually(pinged, timeout=10)
        traceparent = receiver.requests[1].headers["traceparent"]
        assert traceparent.startswith(f"00-{other_trace}-") and traceparent.endswith("-00")
        assert traceparent.split("-")[2] not in (ping_span, PARENT_ID)
        assert "tracestate" not in receiver.requests[1].headers
    finally:
        await receiver.stop()
