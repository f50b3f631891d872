"""The local entry point (port 8080): routes each public path to its service, as the Ingress does.

It routes only paths in their normal form (no ``.`` or ``..`` segments, encoded or not), forwarded
exactly as routed, so no path reaches a service's internal routes (its ``/metrics``, provisioning's
device-token grant); and it holds bodies to the services' limits, streaming file uploads through
rather than buffering them.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import AsyncIterator, Mapping

import aiohttp
import msgspec
from aiohttp import web
from yarl import URL

from services.api_document import whole_document
from shared.api_docs import docs_routes
from shared.environment import check_env
from shared.errors import ErrorBody, NotFound, PayloadTooLarge, ServiceError
from shared.http import json_response
from shared.routing import service_for
from shared.settings import Settings


class BodyLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The services' own limits (MAX_BODY_BYTES, MAX_FILE_BYTES, MAX_SCREENSHOT_BYTES), held here
    too: a body past them is refused before it is read, not after the entry point has buffered it."""

    max_body_bytes: int
    max_file_bytes: int
    max_screenshot_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> BodyLimits:
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_file_bytes=settings.max_file_bytes,
            max_screenshot_bytes=settings.max_screenshot_bytes,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BodyLimits:
        """The limits ``env`` sets, the services' defaults otherwise."""
        values = check_env(Settings, env)
        defaults = {field.name: field.default for field in msgspec.structs.fields(Settings)}
        return cls(**{name: values.get(name, defaults[name]) for name in cls.__struct_fields__})

    def of_request(self, request: web.Request) -> tuple[int, str]:
        """The limit of this request's body, and the setting that names it."""
        if request.method == "PUT" and request.path.startswith(_FILES):
            return self.max_file_bytes, "MAX_FILE_BYTES"
        if request.method == "PUT" and _SCREENSHOT.fullmatch(request.path):
            return self.max_screenshot_bytes, "MAX_SCREENSHOT_BYTES"
        return self.max_body_bytes, "MAX_BODY_BYTES"


# Where files are uploaded (PUT /v1/content/{name}) and screenshots (PUT
# /v1/device/commands/{commandId}/screenshot): the bodies streamed through, not buffered.
_FILES = "/v1/content/"
_SCREENSHOT = re.compile(r"/v1/device/commands/[^/]+/screenshot")


def _streamed(request: web.Request) -> bool:
    return request.path.startswith(_FILES) or bool(_SCREENSHOT.fullmatch(request.path))


UPSTREAMS = web.AppKey("UPSTREAMS", dict[str, str])
LIMITS = web.AppKey("LIMITS", BodyLimits)
CLIENT = web.AppKey("CLIENT", aiohttp.ClientSession)

# Hop-by-hop headers (RFC 9110 §7.6.1) are the proxy's own, not passed along.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


def create_app(upstreams: dict[str, str], limits: BodyLimits) -> web.Application:
    """``upstreams`` maps service name → base URL (``http://127.0.0.1:8081``)."""
    app = web.Application(client_max_size=limits.max_body_bytes)
    app[UPSTREAMS] = upstreams
    app[LIMITS] = limits
    app.cleanup_ctx.append(client_ctx)
    openapi = whole_document()

    async def openapi_document(request: web.Request) -> web.Response:
        return json_response(openapi)

    async def healthz(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    app.router.add_get("/openapi.json", openapi_document)
    app.router.add_get("/healthz", healthz)
    for path, handler in docs_routes():  # the docs page, as registry serves it in a cluster
        app.router.add_get(path, handler)
    app.router.add_route("*", r"/{path:[\s\S]*}", proxy)
    return app


# A client that goes away cancels its proxied request, which closes the upstream one: a streamed
# response (GET /v1/heartbeats/stream) would otherwise hold the upstream until its next write.
HANDLER_CANCELLATION = True


# How long an upstream may stay silent, as the Ingress's proxy-read-timeout (tests/test_deploy.py
# compares them): longer than any wait a TV's poll may ask (DEVICE_WAIT_MAX_SECONDS) and than a
# heartbeat stream's keep-alive. No limit on the whole request: the stream lasts as long as its client.
READ_TIMEOUT_SECONDS = 3600
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=READ_TIMEOUT_SECONDS)


async def client_ctx(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, timeout=UPSTREAM_TIMEOUT
    ) as session:
        app[CLIENT] = session
        yield


class _Streamed:
    """A body passed on as it arrives, cut off past ``limit`` (one without a Content-Length)."""

    def __init__(self, request: web.Request, limit: int) -> None:
        self._request, self._limit = request, limit
        self.exceeded = False

    async def chunks(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._request.content.iter_any():
            size += len(chunk)
            if size > self._limit:  # the upstream request fails half-way: the service stores nothing
                self.exceeded = True
                raise PayloadTooLarge("past the limit")
            yield chunk


def _undecodable_marked(value: str) -> str:
    """A header value as the service should see it. Bytes that are not UTF-8 arrive as lone
    surrogates, which the client would silently drop (``Bearer <key>\\xff`` would become a valid
    ``Bearer <key>``); they become U+FFFD, still not ASCII, so still no credential."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def normal_form(path: str) -> bool:
    """Whether ``path`` (percent-decoded) has no dot segments, which a proxy or a service would
    resolve into another path than the one routed."""
    return not any(segment in (".", "..") for segment in path.split("/"))


async def proxy(request: web.Request) -> web.StreamResponse:
    service = service_for(request.path) if normal_form(request.path) else None
    if service is None:
        return json_response(NotFound("no such path").body(), status=404)
    limit, setting = request.app[LIMITS].of_request(request)
    too_large = PayloadTooLarge(f"the body is at most {limit} bytes ({setting})")
    if request.content_length is not None and request.content_length > limit:
        return _error(too_large)
    data: bytes | AsyncIterator[bytes] | None = None
    streamed = _Streamed(request, limit)
    if request.body_exists:
        if _streamed(request):
            data = streamed.chunks()
        else:
            try:
                data = await request.read()  # at most MAX_BODY_BYTES (client_max_size)
            except web.HTTPRequestEntityTooLarge:
                return _error(too_large)
    headers = {k: _undecodable_marked(v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
    forwarded = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{forwarded}, {request.remote}" if forwarded else str(request.remote)
    # Forwarded byte for byte: a URL built from text would be normalised again on the way.
    url = URL(request.app[UPSTREAMS][service] + request.rel_url.raw_path_qs, encoded=True)
    try:
        async with request.app[CLIENT].request(
            request.method, url, headers=headers, data=data, allow_redirects=False
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except aiohttp.ClientConnectionError:
        if streamed.exceeded:
            return _error(too_large)
        return json_response(
            ErrorBody(error="unavailable", message=f"{service} is not reachable"), status=502
        )


def _error(error: ServiceError) -> web.Response:
    response = json_response(error.body(), status=error.status)
    response.force_close()  # the rest of the body is not read
    return response


def main(argv: list[str]) -> None:
    """``python -m devstack.entrypoint [HOST:]PORT NAME=URL...``: the entry point alone, in front of
    services that run elsewhere (docker-compose.yml); on every address unless HOST is given."""
    try:
        address, *pairs = argv
        host, _, port = address.rpartition(":")
        upstreams = dict(pair.split("=", 1) for pair in pairs)
        port_number = int(port)
    except ValueError:
        raise SystemExit(main.__doc__) from None
    web.run_app(
        create_app(upstreams, BodyLimits.from_env(os.environ)),
        host=host or None,
        port=port_number,
        access_log=None,
        print=None,
        handler_cancellation=HANDLER_CANCELLATION,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
