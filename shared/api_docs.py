"""The API's docs page at ``/docs``: Swagger UI, pointed at ``/openapi.json``.

Swagger UI's release files come from the flask-swagger-ui wheel, which carries them as published
(its ``dist`` folder); the package itself is never imported, only its files are served. Nothing
is fetched from elsewhere: the page, its script, style and icons are all under ``/docs/``, and a
strict Content-Security-Policy (no inline script or style, nothing from another origin) keeps it
so. The initializer is our own small script, as the policy allows no inline one.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# No request leaves the API's own origin; Swagger UI's stylesheet draws its icons as data: URIs.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The files change only with a release of the wheel or of this module: a day's caching, then a
# revalidation by ETag (304) costs one round trip.
ASSET_CACHE_CONTROL = "public, max-age=86400"

_PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Signage API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="stylesheet" href="/docs/index.css">
<link rel="icon" type="image/png" sizes="32x32" href="/docs/favicon-32x32.png">
<link rel="icon" type="image/png" sizes="16x16" href="/docs/favicon-16x16.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/initializer.js"></script>
</body>
</html>
"""

# validatorUrl null: Swagger UI would otherwise send the document to an online validator.
_INITIALIZER = b"""window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
  });
});
"""

# The release's files the page uses, by name, and their media types.
_RELEASE_FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "index.css": "text/css",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}


def swagger_ui_folder() -> Path:
    """Where the installed flask-swagger-ui wheel keeps Swagger UI's release (found, not imported)."""
    spec = find_spec("flask_swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the docs page needs the flask-swagger-ui package (a runtime dependency)")
    return Path(next(iter(spec.submodule_search_locations))) / "dist"


def swagger_ui_version() -> str:
    return (swagger_ui_folder() / "VERSION").read_text().strip().removeprefix("v")


@dataclass(frozen=True)
class _Asset:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> _Asset:
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return cls(body, gzip.compress(body, mtime=0), content_type, etag)

    def response(self, request: web.Request, headers: dict[str, str]) -> web.Response:
        headers = {**headers, "ETag": self.etag, "Vary": "Accept-Encoding"}
        if self.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        charset = "utf-8" if self.content_type.startswith("text/") else None
        body = self.body
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            body = self.gzipped
        return web.Response(body=body, content_type=self.content_type, charset=charset, headers=headers)


def _handler(asset: _Asset, headers: dict[str, str]) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        return asset.response(request, headers)

    return serve


def docs_routes() -> list[tuple[str, Handler]]:
    """``(path, GET handler)`` for the page at ``/docs`` and each file it loads under ``/docs/``,
    read into memory once (about 2 MB, with a gzipped copy of each)."""
    folder = swagger_ui_folder()
    common = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": CONTENT_SECURITY_POLICY}
    page_headers = {**common, "Cache-Control": "no-cache", "Referrer-Policy": "no-referrer"}
    asset_headers = {**common, "Cache-Control": ASSET_CACHE_CONTROL}
    routes = [
        ("/docs", _handler(_Asset.of(_PAGE, "text/html"), page_headers)),
        ("/docs/initializer.js", _handler(_Asset.of(_INITIALIZER, "text/javascript"), asset_headers)),
    ]
    for name, content_type in _RELEASE_FILES.items():
        asset = _Asset.of((folder / name).read_bytes(), content_type)
        routes.append((f"/docs/{name}", _handler(asset, asset_headers)))
    return routes
