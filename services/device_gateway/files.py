"""Files devices download by name (``GET /v1/device/content/{name}``): from the object store,
each device seeing only its tenant's files meant for its screen, with strong ETags and single
byte ranges (RFC 9110 §14), so a TV resumes a large download where it stopped. The body is sent a
chunk at a time (``chunks.py``), so a download's memory is one chunk whatever the file's size;
downloads are shed like every device request, and a device has only a few at once."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator
from typing import Literal

import nats.errors
import nats.js.errors
import structlog
from aiohttp import web

from services.device_gateway.admission import ADMISSION
from services.device_gateway.chunks import ChunkMissing, DigestMismatch, FileChunks, object_info
from services.device_gateway.devices import authenticate, etag_matches
from shared.bus import JS
from shared.errors import NotFound, Unavailable
from shared.http import response_ids
from shared.projections import device_file_etag, device_file_meta, device_file_object, is_device_file_name

log = structlog.get_logger()

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_NOT_FOUND = (
    nats.js.errors.ObjectNotFoundError,
    nats.js.errors.ObjectDeletedError,
    nats.js.errors.NotFoundError,
    ChunkMissing,
)


async def get_file(request: web.Request) -> web.StreamResponse:
    admission = request.app[ADMISSION]
    admission.admit()
    device = authenticate(request)
    name = request.match_info["name"]
    if not is_device_file_name(name):
        raise NotFound("no such file")
    try:
        info = await object_info(request.app[JS], device_file_object(device.tenant_id, name))
        meta = device_file_meta(info.description)
        # Another screen's file is as absent as a file that does not exist.
        if info.deleted or (meta.screen_ids and device.screen_id not in meta.screen_ids):
            raise NotFound("no such file")
        etag = device_file_etag(info.digest)
        headers = {
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Cache-Control": "private, no-cache",
            # The type is the uploader's choice: a browser must not guess a more dangerous one.
            "X-Content-Type-Options": "nosniff",
        }
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match and etag_matches(if_none_match, etag):
            return web.Response(status=304, headers=headers)
        size = info.size or 0
        wanted = _range(request, size, etag)
        if wanted == "unsatisfiable":
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        with admission.download(device.device_id):
            chunks = FileChunks(request.app[JS], info)
            status, length = (200, size) if wanted is None else (206, wanted[1] - wanted[0] + 1)
            if size == 0:
                pieces = _nothing()
            elif wanted is None:
                pieces = await chunks.read_whole()
            else:
                pieces = await chunks.read(*wanted)
                headers["Content-Range"] = f"bytes {wanted[0]}-{wanted[1]}/{size}"
            response = web.StreamResponse(
                status=status,
                headers={
                    **headers,
                    "Content-Type": meta.content_type,
                    **response_ids(),
                },
            )
            response.content_length = length
            return await _send(request, response, pieces, name)
    except _NOT_FOUND:
        raise NotFound("no such file") from None
    except (nats.errors.Error, TimeoutError):
        raise Unavailable("files are not reachable; retry shortly", retry_after=5) from None


async def _send(
    request: web.Request, response: web.StreamResponse, pieces: AsyncGenerator[bytes, None], name: str
) -> web.StreamResponse:
    """The body, piece by piece: each write waits while the TV's socket is full, so a slow TV
    holds one chunk, not the file. Once the headers are out a failure can only cut the
    connection, which the TV sees as a short body (Content-Length) and resumes with a range."""
    await response.prepare(request)
    try:
        async with contextlib.aclosing(pieces):  # a TV gone: its chunks' consumer ends now
            async for piece in pieces:
                await response.write(piece)
        await response.write_eof()
    except ConnectionError:  # the TV went away
        pass
    except (ChunkMissing, DigestMismatch, nats.errors.Error, TimeoutError) as exc:
        log.warning("device_file_read_failed", name=name, error=type(exc).__name__)
        if request.transport is not None:
            request.transport.abort()
    return response


async def _nothing() -> AsyncGenerator[bytes, None]:
    return
    yield  # an empty async generator


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
