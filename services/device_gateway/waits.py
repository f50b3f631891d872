"""Requests held until what they wait for changes: a screen's content or commands, a device's key.

A TV that asks with ``Prefer: wait=N`` (RFC 7240) is answered when what it asked about changes,
or after N seconds. A waiting request costs memory (the request, a future), no CPU: whatever
applies a change (the projections) wakes the requests waiting on it, by key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable

from aiohttp import web


class Waits:
    """The requests of one gateway process that wait, by the keys they wait on."""

    def __init__(self) -> None:
        self._waiting: dict[Hashable, set[asyncio.Future[None]]] = {}
        self.count = 0  # requests waiting now
        self.stopping = False

    async def changed(self, keys: Iterable[Hashable], timeout: float) -> bool:
        """Wait until one of ``keys`` is woken (True) or ``timeout`` seconds pass (False); at once
        False while the process stops (the TV asks again, of another replica)."""
        if self.stopping:
            return False
        keys = tuple(keys)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for key in keys:
            self._waiting.setdefault(key, set()).add(future)
        self.count += 1
        try:
            async with asyncio.timeout(timeout):
                await future
            return not self.stopping
        except TimeoutError:
            return False
        finally:
            self.count -= 1
            for key in keys:
                waiting = self._waiting.get(key)
                if waiting is not None:
                    waiting.discard(future)
                    if not waiting:
                        del self._waiting[key]

    def wake(self, key: Hashable) -> None:
        """Answer every request waiting on ``key`` (each looks again at what it waits for)."""
        for future in self._waiting.pop(key, ()):
            if not future.done():
                future.set_result(None)

    def wake_all(self) -> None:
        """Answer every waiting request, and those that come, at once: the process is stopping."""
        self.stopping = True
        for key in list(self._waiting):
            self.wake(key)


WAITS = web.AppKey("WAITS", Waits)
