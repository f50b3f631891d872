"""What the gateway serves a screen (its playlist and config, the ``screen-content`` KV entry):
put again in the transaction of every change to either, so the relay publishes it on commit."""

from __future__ import annotations

import uuid

from services.registry import queries
from shared import outbox
from shared.db import Connection
from shared.projections import SCREEN_CONTENT_BUCKET, ScreenContent


async def publish(conn: Connection, screen_id: uuid.UUID) -> ScreenContent:
    """Queue the screen's content as it now stands in this transaction; returns it."""
    content = await queries.screen_content.get_screen_content(conn, screen_id)
    await outbox.put_kv(conn, SCREEN_CONTENT_BUCKET, str(screen_id), content)
    return content
