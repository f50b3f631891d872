"""Requests held until what they wait for changes: a screen's content or commands, a device's key.

A TV that asks with ``Prefer: wait=N`` (RFC 7240) is answered when what it asked about changes,
or after N seconds. A waiting request costs memory (the request, a future), no CPU: whatever
applies a change (the projections) wakes the requests waiting on it, by key.

A key is ``(topic, id)``: :data:`CONTENT` and :data:`COMMANDS` with the 16 bytes of a screen's
id, :data:`DEVICE` with the 16 bytes of a device's id (what :class:`DeviceKey` holds packed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable

import prometheus_client
from aiohttp import web

from services.device_gateway.admission import ADMISSION

CONTENT, COMMANDS, DEVICE = "content", "commands", "device"

# Summed over a pod's workers: each holds its own.
WAITING = prometheus_client.Gauge(
    "gateway_waiting_requests", "Polls held until a change or their wait ends", multiprocess_mode="livesum"
)
REFUSED = prometheus_client.Counter(
    "gateway_waits_refused_total",
    "Polls that asked to wait and were answered at once: the worker held GATEWAY_MAX_WAITING already",
)


class Waits:
    """The requests of one gateway process that wait, by the keys they wait on.

    What a waiting request costs here is kept small, as there may be tens of thousands: its
    future, one timer, and under each key the future itself (a set only while several wait on it).
    """

    def __init__(self, *, limit: int, max_seconds: float) -> None:
        self._waiting: dict[Hashable, asyncio.Future[bool] | set[asyncio.Future[bool]]] = {}
        self.count = 0  # requests waiting now
        self.limit = limit  # the most held at once (GATEWAY_MAX_WAITING)
        self.max_seconds = max_seconds  # the longest wait (DEVICE_WAIT_MAX_SECONDS)
        self.stopping = False

    async def changed(self, keys: Iterable[Hashable], timeout: float) -> bool:
        """Wait until one of ``keys`` is woken (True) or ``timeout`` seconds pass (False); at once
        False while the process stops (the TV asks again, of another replica)."""
        if self.stopping:
            return False
        keys = tuple(keys)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        for key in keys:
            self._add(key, future)
        timer = loop.call_later(timeout, _settle, future, False)
        self.count += 1
        try:
            return await future and not self.stopping
        finally:
            timer.cancel()
            self.count -= 1
            for key in keys:
                self._remove(key, future)

    def wake(self, key: Hashable) -> None:
        """Answer every request waiting on ``key`` (each looks again at what it waits for)."""
        waiting = self._waiting.pop(key, None)
        if isinstance(waiting, set):
            for future in waiting:
                _settle(future, True)
        elif waiting is not None:
            _settle(waiting, True)

    def wake_all(self) -> None:
        """Answer every waiting request, and those that come, at once: the process is stopping."""
        self.stopping = True
        for key in list(self._waiting):
            self.wake(key)

    def _add(self, key: Hashable, future: asyncio.Future[bool]) -> None:
        present = self._waiting.get(key)
        if present is None:
            self._waiting[key] = future
        elif isinstance(present, set):
            present.add(future)
        else:
            self._waiting[key] = {present, future}

    def _remove(self, key: Hashable, future: asyncio.Future[bool]) -> None:
        present = self._waiting.get(key)
        if present is future:
            del self._waiting[key]
        elif isinstance(present, set):
            present.discard(future)
            if not present:
                del self._waiting[key]


def _settle(future: asyncio.Future[bool], woken: bool) -> None:
    if not future.done():
        future.set_result(woken)


WAITS = web.AppKey("WAITS", Waits)


def requested_wait(request: web.Request, cap: float) -> float | None:
    """The seconds of the request's ``Prefer: wait=N`` cut to ``cap``; None when it asks no wait.

    RFC 7240: preferences are comma-separated, their names case-insensitive, a value a token or a
    quoted string, parameters after ``;``; only a preference's first instance counts. A server
    ignores what it does not understand: other preferences, and a ``wait`` whose value is not
    delta-seconds (so it is answered at once, as without it). ``wait=0`` asks no wait.
    """
    headers = request.headers.getall("Prefer", ())
    if not headers:
        return None
    for header in headers:
        for preference in _split_outside_quotes(header, ","):
            name, _, value = _split_outside_quotes(preference, ";")[0].partition("=")
            if name.strip().lower() != "wait":
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if not (value.isascii() and value.isdigit()):
                return None
            digits = value.lstrip("0")
            seconds = cap if len(digits) > 9 else min(int(digits or "0"), cap)  # past any cap already
            return seconds or None
    return None


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` where it is not inside a quoted string (with ``\\`` escapes)."""
    if '"' not in text:
        return text.split(separator)
    parts, start, quoted, escaped = [], 0, False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


async def hold(
    request: web.Request,
    keys: tuple[Hashable, ...],
    unchanged: Callable[[], web.StreamResponse],
    again: Callable[[], web.StreamResponse | None],
) -> web.StreamResponse:
    """The answer to a poll that would get ``unchanged()`` now (a 304, an empty list): at once
    without ``Prefer: wait``; otherwise held until one of ``keys`` is woken and ``again()`` has
    another answer, or until the wait ends (then ``unchanged()``), with ``Preference-Applied``.

    ``again()`` looks at what the TV asked about once more: None while nothing it cares about
    changed (the wait goes on, for the time left), or the answer. It may raise: a revoked
    device's key answers 401 ``device_revoked`` at once. Both are made when needed, not held
    while waiting. A poll to be held is admitted while the worker lags; one answered at once is
    shed as any other (the caller leaves admission to this).
    """
    waits = request.app[WAITS]
    wait = requested_wait(request, waits.max_seconds)
    if wait is not None and waits.count >= waits.limit:
        REFUSED.inc()
        wait = None
    if wait is None or waits.stopping:
        request.app[ADMISSION].admit()  # a poll held is not shed (see admission); one answered now is
        return unchanged()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        left = deadline - loop.time()
        # False: the wait ended, or the process stops (the TV asks again, of another replica).
        woken = left > 0 and await waits.changed(keys, left)
        response = again() if woken else unchanged()
        if response is not None:
            break
    response.headers["Preference-Applied"] = f"wait={wait:g}"
    return response
