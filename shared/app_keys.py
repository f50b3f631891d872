"""What a service's app holds that every layer may read: its settings, its name, its readiness
checks and its requests in flight. No request handling here, so the database, the bus, the outbox
and the server runner can depend on it without depending on the HTTP edge."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from shared.settings import Settings

SETTINGS = web.AppKey("SETTINGS", Settings)
SERVICE = web.AppKey("SERVICE", str)
# Named checks that /readyz runs; each returns True when its dependency answers.
READINESS = web.AppKey("READINESS", dict[str, Callable[[], Awaitable[bool]]])


class InFlight:
    """The requests a service is handling, so that a stopping service can wait for them to be
    answered (``shared.serve``); once it is stopping, answers ask the client to close the
    connection, and its next request goes to another replica."""

    def __init__(self) -> None:
        self.count = 0
        self.stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if not self.count:
            self._idle.set()

    async def wait(self, seconds: float) -> int:
        """Wait until no request is in flight, at most ``seconds``; the number still in flight."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        return self.count


IN_FLIGHT = web.AppKey("IN_FLIGHT", InFlight)
