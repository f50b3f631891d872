"""A hostile request set sent through the whole stack: credentials that are not ASCII, JSON nested
past any decoder, broken Basic credentials, alongside every flow that hands out a credential. No
request is a 500, and no line any service logs, in either renderer, carries a credential."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import uuid
from collections.abc import Iterator, MutableMapping
from typing import Any

import structlog

from shared.logging import merge_log_context, renderer_chain
from tests.credentials import mint_every_credential
from tests.stack import Stack


@contextlib.contextmanager
def rendered_logs() -> Iterator[list[str]]:
    """Every log line of the services while the block runs, rendered by both renderers (JSON and
    console, tracebacks included), and the standard library's records (aiohttp's own)."""
    lines: list[str] = []
    chains = [renderer_chain("json", tty=False), renderer_chain("console", tty=False)]

    def tee(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        for chain in chains:
            rendered: Any = dict(event)
            for processor in chain:
                rendered = processor(logger, method, rendered)
            lines.append(rendered)
        raise structlog.DropEvent

    saved = structlog.get_config()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            merge_log_context,
            structlog.processors.add_log_level,
            tee,
        ],
        cache_logger_on_first_use=False,
    )
    stdlib = io.StringIO()
    handler = logging.StreamHandler(stdlib)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        structlog.configure(**saved)
        root.removeHandler(handler)
        root.setLevel(level)
        lines.append(stdlib.getvalue())


async def raw(port: int, line: bytes, headers: list[bytes], body: bytes) -> int:
    """One request as bytes (headers no client library would send), its status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [line + b" HTTP/1.1", b"Host: x", b"Connection: close", b"Content-Length: %d" % len(body)]
        writer.write(b"\r\n".join([*head, *headers, b"", b""]) + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 20)
        await reader.read()
        return int(status_line.split()[1])
    finally:
        writer.close()


def bearer(credential: str) -> bytes:
    """The real credential with one byte that is not ASCII after it: an error that rendered its
    frames' locals would show the credential."""
    return b"Authorization: Bearer " + credential.encode() + b"\xff"


def hostile_requests(creds: dict[str, str]) -> list[tuple[str, bytes, list[bytes], bytes, int]]:
    """``(service, request line, headers, body, the status it must get)``."""
    json_type = b"Content-Type: application/json"
    hostile = [
        (service, line, [json_type, bearer(creds[credential])], b"{}", 401)
        for service, line, credential in (
            ("registry", b"POST /v1/tenants", "operator token"),
            ("registry", b"GET /v1/screens", "access token"),
            ("registry", b"POST /oauth/register", "initial access token"),
            ("provisioning", b"POST /v1/devices/pre-provisioned", "operator token"),
            ("provisioning", b"GET /v1/devices", "access token"),
            ("provisioning", b"POST /v1/device/logout", "device key"),
            ("provisioning", b"POST /v1/device/claim-mode", "factory device key"),
            ("device-gateway", b"GET /v1/device/playlist", "recovered device key"),
            ("device-gateway", b"POST /v1/device/heartbeat", "provisioned device key"),
            ("heartbeat", b"GET /v1/fleet/status", "access token"),
        )
    ]
    form = b"Content-Type: application/x-www-form-urlencoded"
    secret = creds["client secret"].encode()
    for basic in (
        b"Basic \xff\xfe",
        b"Basic " + secret + b"\xff",
        b"Basic !!!notbase64",
        b"Basic " + base64.b64encode(b"cli_x:\xff" + secret),
        b"Basic " + base64.b64encode(b"cli_x:" + secret),
    ):
        hostile.append(
            (
                "registry",
                b"POST /oauth/token",
                [form, b"Authorization: " + basic],
                b"grant_type=client_credentials",
                401,
            )
        )
    deep = b"[" * 100_000
    for service, line, credential in (
        ("registry", b"POST /v1/tenants", "operator token"),
        ("registry", b"POST /v1/venues", "access token"),
        ("provisioning", b"POST /devices/register", None),
        ("provisioning", b"POST /devices/recover", None),
        ("device-gateway", b"POST /v1/device/heartbeat", "activated device key"),
        ("device-gateway", b"POST /v1/device/events", "activated device key"),
    ):
        auth = [] if credential is None else [b"Authorization: Bearer " + creds[credential].encode()]
        hostile.append((service, line, [json_type, *auth], deep, 400))
    return hostile


async def test_hostile_requests_get_no_500_and_no_credential_reaches_a_log(stack: Stack) -> None:
    ports = stack.settings.ports
    answers = []
    with rendered_logs() as lines:
        minted = await mint_every_credential(stack)
        creds = minted.credentials
        for service, line, headers, body, expected in hostile_requests(creds):
            # Straight to the service, and through the entry point as a caller would come.
            for port in (ports[service], ports["entrypoint"]):
                status = await raw(port, line, headers, body)
                answers.append((line, headers[-1][:40], port, status, expected))
        # The device key the hostile set used with deep JSON still works.
        status, _, _ = await stack.call("GET", "/v1/device/playlist", token=creds["activated device key"])
        assert status == 200

    wrong = [answer for answer in answers if answer[-2] != answer[-1]]
    assert wrong == [], wrong

    logged = "\n".join(lines)
    assert "tenant_created" in logged and "device_registered" in logged  # both renderers saw the flows
    assert '"status": 401' in logged and "status=400" in logged  # and the hostile requests
    assert "unhandled_error" not in logged and "Traceback" not in logged
    assert '"status": 500' not in logged and "status=500" not in logged
    # User codes are in the approval path by design (an admin types one in); every other credential
    # must appear in no line.
    scanned = {what: secret for what, secret in creds.items() if what != "user code"}
    assert len(scanned) >= 15, sorted(scanned)
    for what, secret in scanned.items():
        assert secret not in logged, f"{what} in a log line"


def test_neither_renderer_shows_a_frames_locals() -> None:
    lines: list[str] = []
    secret = "op_" + uuid.uuid4().hex  # not in any source line a traceback quotes

    def fails(credential: str) -> None:
        raise ValueError("no")

    for log_format in ("json", "console"):
        chain = renderer_chain(log_format, tty=False)
        try:
            fails(secret)
        except ValueError as exc:
            rendered: Any = {"event": "unhandled_error", "exc_info": exc}
            for processor in chain:
                rendered = processor(None, "error", rendered)
            lines.append(rendered)
    assert all("fails" in line for line in lines), lines  # the traceback is there, frame by frame
    assert not any(secret in line for line in lines), lines
