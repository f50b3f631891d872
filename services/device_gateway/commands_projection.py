"""The gateway's in-memory view of the ``device-commands`` bucket: each screen's open commands.

Registry rewrites a screen's entry whenever one of its commands opens or closes; every worker
follows the bucket, so a TV's ``GET /v1/device/commands`` is answered from memory, and applying an
entry wakes the TV's waiting request (its :func:`commands_key` in :class:`Waits`). Only screens
with open commands take memory: an entry without items is dropped.

It also remembers which commands this worker has reported ``delivered``, so a TV that polls
again is not reported again each time (delivery is at least once; another worker, or this one
after a restart, may report it once more). An id is forgotten once its command is no longer
open, which bounds the memory by the open commands.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import msgspec
import structlog
from aiohttp import web

from services.device_gateway.projections import DeviceKey
from services.device_gateway.waits import COMMANDS as WAITED_COMMANDS
from services.device_gateway.waits import Waits
from shared.bus import NC
from shared.kv_watch import watch_bucket
from shared.projections import DEVICE_COMMANDS_BUCKET, OpenCommand, ScreenCommands
from shared.tasks import stop

log = structlog.get_logger()

_screen_commands = msgspec.json.Decoder(ScreenCommands)


def commands_key(screen_id: uuid.UUID) -> tuple[str, bytes]:
    """What a TV waiting for its screen's commands waits on in :class:`Waits`."""
    return (WAITED_COMMANDS, screen_id.bytes)


class OpenCommands:
    def __init__(self, waits: Waits) -> None:
        self.screens: dict[uuid.UUID, ScreenCommands] = {}  # screen id -> its open commands
        self.reported: set[uuid.UUID] = set()  # commands this worker has reported delivered
        self.uploaded: set[uuid.UUID] = set()  # commands whose screenshot this worker stored
        # Delivered reports waiting for the bus (services/device_gateway/commands.py), bounded.
        self.deliveries: asyncio.Queue[tuple[DeviceKey, uuid.UUID]] = asyncio.Queue(maxsize=10_000)
        self.loaded = asyncio.Event()
        self._waits = waits

    def of_screen(self, screen_id: uuid.UUID, tenant_id: uuid.UUID) -> list[OpenCommand]:
        """The screen's open commands, oldest first, past-due ones included (registry's sweep
        closes those)."""
        entry = self.screens.get(screen_id)
        if entry is None or entry.tenant_id != tenant_id:
            return []
        return entry.items

    def due(self, screen_id: uuid.UUID, tenant_id: uuid.UUID, now: datetime) -> list[OpenCommand]:
        """The commands the screen's TV is to carry out now: open, and not past their expiry."""
        return [item for item in self.of_screen(screen_id, tenant_id) if item.expires_at > now]

    def find(self, screen_id: uuid.UUID, tenant_id: uuid.UUID, command_id: uuid.UUID) -> OpenCommand | None:
        return next((c for c in self.of_screen(screen_id, tenant_id) if c.id == command_id), None)

    def apply(self, key: str, value: bytes | None) -> None:
        screen_id = uuid.UUID(key)
        entry = None if value is None else _screen_commands.decode(value)
        before = self.screens.pop(screen_id, None)
        if entry is not None and entry.items:
            self.screens[screen_id] = entry
        if before is not None:
            still_open = {item.id for item in entry.items} if entry is not None else set()
            closed = [item.id for item in before.items if item.id not in still_open]
            self.reported.difference_update(closed)
            self.uploaded.difference_update(closed)
        self._waits.wake(commands_key(screen_id))

    def mark_loaded(self) -> None:
        self.loaded.set()
        log.info("projection_loaded", bucket=DEVICE_COMMANDS_BUCKET, screens=len(self.screens))


COMMANDS = web.AppKey("COMMANDS", OpenCommands)


async def commands_ctx(app: web.Application) -> AsyncIterator[None]:
    """Follow the bucket for the app's lifetime; the port opens once it is loaded (as for the
    other projections: a TV is never told it has no commands by a replica that has not read them)."""
    commands = app[COMMANDS]
    watcher = asyncio.create_task(
        watch_bucket(
            app[NC],
            DEVICE_COMMANDS_BUCKET,
            commands.apply,
            commands.mark_loaded,
            # A bucket created anew: the screens it no longer has lose their commands here too.
            held=lambda: [str(screen) for screen in commands.screens],
        ),
        name=f"watch-{DEVICE_COMMANDS_BUCKET}",
    )
    loaded = asyncio.create_task(commands.loaded.wait())
    await asyncio.wait([loaded, watcher], return_when=asyncio.FIRST_COMPLETED)
    if not loaded.done():
        loaded.cancel()
        watcher.result()  # the watch runs forever: one that ended failed, and so does the start-up
        raise RuntimeError(f"the watch of {DEVICE_COMMANDS_BUCKET} ended")
    yield
    await stop(watcher)
