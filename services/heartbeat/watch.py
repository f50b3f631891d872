"""The watch: when each screen was last heard, in memory, so presence need not be written per
heartbeat.

The presence consumer writes a screen's row only on a transition or once its stored heartbeat is
PRESENCE_WRITE_SECONDS old (see :func:`queries.record_heartbeats`), so the row cannot say when a
screen stopped. Every replica therefore follows every heartbeat on ``HEARTBEATS`` (an ordered
consumer delivering headers only: the subject names the screen, the stream's timestamp the
time) and keeps each screen's newest time. Every PRESENCE_CHECK_SECONDS it turns the screens past
their deadline (``OFFLINE_AFTER_INTERVALS`` times their interval, the same bound as ever) offline,
checked again in the database under the row lock, so replicas doing the same announce each
transition once.

The watch judges only up to where it has read: while messages wait for it (its consumer's
pending count), "now" is the time of the last heartbeat it read, so a slow replica never takes a
screen whose heartbeats it has not read yet for one that stopped; while the bus is unreachable it
judges nothing. A starting watch takes every online screen as heard at its start: with every
replica restarted at once, a screen that stopped just before is found at most one deadline
later. Should no watch run at all, the rows' own ``offline_after`` (deadline +
PRESENCE_WRITE_SECONDS) is the backstop the detector in ``consumers.py`` reads.

Memory: about 200 bytes a screen heard (a million screens: ~200 MB a replica); a screen is
forgotten once it is offline with nothing newer heard.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import nats.errors
import prometheus_client
import structlog
from aiohttp import web
from nats.aio.msg import Msg
from nats.js import api

from services.heartbeat import queries
from services.heartbeat.consumers import TRANSITIONS
from shared import outbox
from shared.app_keys import SETTINGS
from shared.bus import JS
from shared.db import POOL
from shared.events import PresenceChanged, subject_of_type

log = structlog.get_logger()

WATCHED = prometheus_client.Gauge("presence_watched_screens", "Screens the presence watch keeps in memory")
_PRESENCE_SUBJECT = subject_of_type(PresenceChanged)
# Heartbeats in flight between the server and the watch when it asked how far behind it is.
_IN_FLIGHT_SECONDS = 0.5
_CHECK_BATCH = 1000
# Screens are looked at in tenths of a second: a screen is found at most that late.
_TICKS = 10


class Watch:
    """Each screen's newest heartbeat time (epoch seconds) and its deadline window (seconds), and
    the tick at which to look at each screen next: a sweep costs the screens due, not the
    fleet (a heartbeat only moves a time; a screen is looked at about once per window)."""

    def __init__(self, offline_after_intervals: float) -> None:
        self.intervals = offline_after_intervals
        self.heard: dict[str, list[float]] = {}
        self.due: dict[int, list[str]] = {}  # tick -> the screens to look at then
        self.read_up_to = 0.0  # the stream time of the newest heartbeat read
        # Screens taken as heard at the watch's start, not heard since: their time is an
        # assumption, never a "last seen" to store.
        self.assumed: set[str] = set()

    def window(self, interval_minutes: int) -> float:
        return self.intervals * 60 * interval_minutes

    def hear(self, screen_id: str, at: float) -> None:
        self.assumed.discard(screen_id)
        entry = self.heard.get(screen_id)
        if entry is None:
            # Until the database says otherwise, the shortest interval there is (a minute).
            self.add(screen_id, at, self.window(1))
        elif at > entry[0]:
            entry[0] = at
        self.read_up_to = max(self.read_up_to, at)

    def add(self, screen_id: str, at: float, window: float) -> None:
        self.heard[screen_id] = [at, window]
        self._look_at(screen_id, at + window)

    def _look_at(self, screen_id: str, when: float) -> None:
        self.due.setdefault(math.ceil(when * _TICKS), []).append(screen_id)

    def assume(self, screen_id: str, at: float, window: float) -> None:
        """A screen online in the database when the watch starts, unless heard already."""
        if screen_id not in self.heard:
            self.add(screen_id, at, window)
            self.assumed.add(screen_id)

    def overdue(self, now: float) -> list[tuple[str, float]]:
        """The screens past their deadline at ``now``, with their last heartbeat's time; each is
        looked at again at the next check unless :meth:`forget` is called meanwhile."""
        found = []
        for tick in sorted(tick for tick in self.due if tick <= now * _TICKS):
            for screen in self.due.pop(tick):
                entry = self.heard.get(screen)
                if entry is None:
                    continue
                deadline = entry[0] + entry[1]
                if deadline <= now:
                    found.append((screen, entry[0]))
                    self._look_at(screen, now)
                else:
                    self._look_at(screen, deadline)
        return found

    def forget(self, screen_id: str) -> None:
        self.heard.pop(screen_id, None)
        self.assumed.discard(screen_id)


async def watch_presence(app: web.Application) -> None:
    """Follow the heartbeats and turn the screens that stopped offline (a background task)."""
    settings = app[SETTINGS]
    watch = Watch(settings.offline_after_intervals)
    started = time.time()

    async def on_message(message: Msg) -> None:
        if message.subject != _PRESENCE_SUBJECT:
            watch.hear(message.subject.rpartition(".")[2], message.metadata.timestamp.timestamp())

    # Following first, loading second: a screen brought online by heartbeats published between
    # the two is heard, where the other order would know of it only from the backstop.
    config = api.ConsumerConfig(
        filter_subject="heartbeat.*.*", deliver_policy=api.DeliverPolicy.NEW, headers_only=True
    )
    subscription = await app[JS].subscribe(
        "", stream="HEARTBEATS", cb=on_message, ordered_consumer=True, config=config
    )
    try:
        async with app[POOL].acquire() as conn:
            for screen in await queries.online_screens(conn):
                watch.assume(str(screen.screen_id), started, watch.window(screen.interval_minutes))
        while True:
            await asyncio.sleep(settings.presence_check_seconds)
            try:
                behind = ((await subscription.consumer_info()).num_pending or 0) + subscription.pending_msgs
            except (TimeoutError, nats.errors.Error):
                continue  # the bus is away: no heartbeat could reach the watch, judge nothing
            now = time.time() if behind == 0 else watch.read_up_to
            now -= _IN_FLIGHT_SECONDS
            try:
                await _turn_offline(app, watch, watch.overdue(now), now)
            except (asyncpg.PostgresError, OSError, TimeoutError):
                # What it knows stays: the screens found are looked at again at the next check
                # (a restart would date every screen to then, and postpone each by a deadline).
                log.exception("presence_watch_check_failed")
            WATCHED.set(len(watch.heard))
    finally:
        await subscription.unsubscribe()


async def _turn_offline(
    app: web.Application, watch: Watch, overdue: list[tuple[str, float]], now: float
) -> None:
    intervals = app[SETTINGS].offline_after_intervals
    for start in range(0, len(overdue), _CHECK_BATCH):
        batch = dict(overdue[start : start + _CHECK_BATCH])
        async with app[POOL].acquire() as conn, conn.transaction():
            states = await queries.watched(conn, [uuid.UUID(screen) for screen in batch])
            stopped: list[uuid.UUID] = []
            for state in states:
                screen = str(state.screen_id)
                seen, entry = batch[screen], watch.heard.get(screen)
                if entry is None or entry[0] != seen:
                    continue  # heard again meanwhile
                if state.status != "online":
                    # Offline already (or its row not written yet): a heartbeat this old cannot
                    # bring it online, and its next one puts it back here.
                    watch.forget(screen)
                    continue
                entry[1] = watch.window(state.interval_minutes)
                if seen + entry[1] <= now:
                    stopped.append(state.screen_id)
            heard = [datetime.fromtimestamp(batch[str(s)], UTC) for s in stopped]
            # A screen only assumed heard keeps its row's own last seen.
            last_seen = [
                None if str(s) in watch.assumed else at for s, at in zip(stopped, heard, strict=True)
            ]
            transitions = await queries.mark_stopped_offline(conn, stopped, heard, last_seen, intervals)
            for transition in transitions:
                await outbox.add_event(conn, transition.event())
        for transition in transitions:
            watch.forget(str(transition.screen_id))
            TRANSITIONS.labels("offline").inc()
            log.info("presence_changed", screen_id=str(transition.screen_id), presence="offline")
