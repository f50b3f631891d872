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

from aiohttp import hdrs, web
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
