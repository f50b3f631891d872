"""Files devices download by name (``GET /v1/device/content/{name}``): from the object store,
each device seeing only its tenant's files meant for its screen, with strong ETags and single
byte ranges (RFC 9110 §14), so a TV resumes a large download where it stopped."""

from __future__ import annotations

import re
from typing import Literal

import nats.errors
import nats.js.errors
from aiohttp import web

from services.device_gateway.devices import authenticate, etag_matches
from shared.bus import FILES
from shared.errors import NotFound, Unavailable
from shared.projections import device_file_etag, device_file_meta, device_file_object, is_device_file_name

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


async def get_file(request: web.Request) -> web.StreamResponse:
    device = authenticate(request)
    name = request.match_info["name"]
    if not is_device_file_name(name):
        raise NotFound("no such file")
    try:
        store = request.app[FILES]
        object_name = device_file_object(device.tenant_id, name)
        info = await store.get_info(object_name)
        meta = device_file_meta(info.description)
        # Another screen's file is as absent as a file that does not exist.
        if info.deleted or (meta.screen_ids and device.screen_id not in meta.screen_ids):
            raise NotFound("no such file")
        etag = device_file_etag(info.digest)
        headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, no-cache"}
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match and etag_matches(if_none_match, etag):
            return web.Response(status=304, headers=headers)
        size = info.size or 0
        wanted = _range(request, size, etag)
        if wanted == "unsatisfiable":
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        data = (await store.get(object_name)).data or b""
    except (
        nats.js.errors.ObjectNotFoundError,
        nats.js.errors.ObjectDeletedError,
        nats.js.errors.NotFoundError,
    ):
        raise NotFound("no such file") from None
    except (nats.errors.Error, TimeoutError):
        raise Unavailable("files are not reachable; retry shortly", retry_after=5) from None
    if wanted is None:
        return web.Response(body=data, headers=headers, content_type=meta.content_type)
    start, end = wanted
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return web.Response(
        status=206, body=data[start : end + 1], headers=headers, content_type=meta.content_type
    )


def _range(request: web.Request, size: int, etag: str) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """The one range asked for, as (first, last) byte; None for the whole file (no Range, an
    If-Range that no longer matches, or several ranges, which a server may answer whole)."""
    header = request.headers.get("Range")
    if not header:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range != etag:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # the last N bytes
        suffix = int(match[2])
        return "unsatisfiable" if suffix == 0 or size == 0 else (max(0, size - suffix), size - 1)
    start = int(match[1])
    end = min(int(match[2]), size - 1) if match[2] else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end
