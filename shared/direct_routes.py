"""Exact paths answered without aiohttp's router: the gateway's polls and reports.

aiohttp's ``Application`` resolves every request through its router (a coroutine per candidate
resource, a new match-info object, its apps stack built and frozen) before our handler runs: on a
poll that is a tenth of the request's CPU. A route whose path has no parameter needs none of it:
:func:`route_directly` answers its requests from a dict of ``(method, raw path)``, each with a
match info built once, so ``request.app`` and ``request.match_info`` are what the router would have
given. Everything else (a path with a query or percent-escapes, HEAD, ``Expect``, a parametrized or
unknown path) goes through the router as before, so what is answered, and how, does not change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_directly(app: web.Application) -> None:
    """Serve ``app``'s routes without path parameters straight from a dict (call once every route
    is added). Relies on aiohttp's ``Application._handle`` being what its server calls for each
    request; checked here, so an aiohttp that changes it fails at start, not silently."""
    through_router: _Handler | None = getattr(app, "_handle", None)  # aiohttp has no public hook
    if not callable(through_router):  # an aiohttp without it: fail at start, not silently
        raise RuntimeError("aiohttp's Application._handle is gone: shared/direct_routes.py needs a look")
    direct: dict[tuple[str, str], tuple[UrlMappingMatchInfo, _Handler]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if "path" not in info or route.method == hdrs.METH_HEAD or route.method == hdrs.METH_ANY:
            continue  # parametrized, HEAD (answered as a GET by the router) or the catch-all
        match_info = UrlMappingMatchInfo({}, route)
        match_info.add_app(app)
        match_info.freeze()
        direct[route.method, info["path"]] = match_info, route.handler

    def handle(request: web.Request) -> Awaitable[web.StreamResponse]:
        found = direct.get((request.method, request.raw_path))
        if found is None or hdrs.EXPECT in request.headers:
            return through_router(request)
        request._match_info = found[0]  # noqa: SLF001 - what the router sets; no public setter
        return found[1](request)

    setattr(app, "_handle", handle)  # noqa: B010 - the server aiohttp builds calls app._handle


_REASONS = {status: HTTPStatus(status).phrase for status in (200, 202, 304)}
_STATUS_LINES = {status: f"HTTP/1.1 {status} {reason}\r\n" for status, reason in _REASONS.items()}
_WRITTEN_DIRECTLY = frozenset({hdrs.METH_GET, hdrs.METH_POST})


class DirectAnswer(web.StreamResponse):
    """A success of a device route (200, 202, 304) written in one go: status line, headers and
    body formatted here and handed to the transport at once.

    aiohttp's ``Response`` gets the same bytes on the wire through a multidict of headers, five
    coroutines (prepare, the headers' preparation, the prepare hook, their serialization, the end
    of the body) and a writer's bookkeeping: a sixth of a poll's CPU. The headers are what aiohttp
    adds (``Date``, ``Server``, ``Content-Length`` and ``Content-Type`` with a body, ``Connection:
    close`` when the connection ends); a request this does not cover (HTTP/1.0, HEAD) is answered
    by an aiohttp ``Response`` made of the same parts. Errors are answered by aiohttp's as ever.
    """

    def __init__(self, status: int, headers: dict[str, str], body: bytes | None = None) -> None:
        # StreamResponse's own __init__ builds a multidict; its attributes have class defaults.
        self._status = status
        self._reason = _REASONS[status]
        self._headers = headers  # type: ignore[assignment]  # a dict: set by instrumented, read here
        self._content = body
        self._fallback: web.Response | None = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent or self._fallback is not None:
            return None
        if request.version != HttpVersion11 or request.method not in _WRITTEN_DIRECTLY:
            return await self._prepare_fallback(request)
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        headers = self._headers
        head = _STATUS_LINES[self._status] + "".join(
            [f"{name}: {value}\r\n" for name, value in headers.items()]
        )
        body = self._content
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        head += f"Date: {rfc822_formatted_time()}\r\nServer: {SERVER_SOFTWARE}\r\n"
        if not keep_alive:
            head += "Connection: close\r\n"
        # Each line ends in the one line break it was given: a value holding another would split
        # the answer (aiohttp refuses those too).
        if head.count("\n") != len(headers) + (5 if body is not None else 3) + (not keep_alive):
            raise ValueError("a header holds a line break")
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        data = (head + "\r\n").encode()
        transport.write(data + body if body else data)
        self._eof_sent = True
        self._body_length = len(body) if body else 0
        # As aiohttp's end of a response: wait while the connection's buffer is over its limit (a
        # client that sends and does not read), at once otherwise.
        await request.writer.drain()
        return None

    async def _prepare_fallback(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        fallback = web.Response(status=self._status, headers=self._headers, body=self._content)
        if self._content is not None:
            fallback.content_type = "application/json"
        if self._keep_alive is False:
            fallback.force_close()
        self._fallback = fallback
        writer = await fallback.prepare(request)
        self._keep_alive = fallback.keep_alive
        self._payload_writer = writer
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        if self._fallback is not None:
            await self._fallback.write_eof(data)
            self._body_length = self._fallback.body_length
        self._eof_sent = True
