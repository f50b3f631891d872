"""Storing a TV's screenshot in its object store the way the gateway's user may: by publishing.

nats-py's ``ObjectStore.put`` first reads the object's metadata (a get: the gateway's user may not
make one, see ``shared.bus_access``) to purge the chunks of the version it replaces. Here the
chunks go on a subject of their own and the metadata replaces the last one with a rollup, as put
does (the gateway stores one screenshot per command). Registry reads the object with the object
store's own reads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime

from nats.js import JetStreamContext, api
from nats.js.kv import MSG_ROLLUP_SUBJECT
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_DEFAULT_CHUNK_SIZE, OBJ_META_PRE_TEMPLATE

from shared.projections import SCREENSHOTS_BUCKET


async def store_screenshot(js: JetStreamContext, name: str, data: bytes, content_type: str) -> None:
    """``data`` as the object ``name``, its content type as the description; each chunk and then
    the metadata stored (acked) before this returns."""
    nuid = uuid.uuid4().hex  # a subject token of its own, as nats-py's nuid is
    chunks = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=SCREENSHOTS_BUCKET, obj=nuid)
    count = 0
    for offset in range(0, len(data), OBJ_DEFAULT_CHUNK_SIZE):
        await js.publish(chunks, data[offset : offset + OBJ_DEFAULT_CHUNK_SIZE])
        count += 1
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
    info = api.ObjectInfo(
        name=name,
        description=content_type,
        bucket=SCREENSHOTS_BUCKET,
        nuid=nuid,
        size=len(data),
        chunks=count,
        mtime=datetime.now(UTC).isoformat(),
        digest=f"SHA-256={digest}",
        options=api.ObjectMetaOptions(max_chunk_size=OBJ_DEFAULT_CHUNK_SIZE),
    )
    meta = OBJ_META_PRE_TEMPLATE.format(
        bucket=SCREENSHOTS_BUCKET, obj=base64.urlsafe_b64encode(name.encode()).decode()
    )
    await js.publish(
        meta, json.dumps(info.as_dict()).encode(), headers={api.Header.ROLLUP: MSG_ROLLUP_SUBJECT}
    )
