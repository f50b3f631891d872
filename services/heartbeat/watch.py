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

A screen's interval comes from the database when the watch finds the screen overdue. A change
also reaches every replica's watch at once, from registry's ``screen.config_changed`` events (a
second ordered consumer): without it, a screen whose interval went from 10 minutes to 1 would be
looked at next after its old 30-minute window, and one that stopped meanwhile found that late. A
shorter interval's deadline counts from when the TV can have learnt of it (see
:meth:`Watch.reconfigure`). Until the database has the change (another
consumer writes it), the event's interval is kept, up to the screen's next look that finds it
alive (a fleet reconfigured at once is not remembered while it lives); past that, the database's.

Memory: about 200 bytes a screen heard (a million screens: ~200 MB a replica); a screen is
forgotten once it is offline with nothing newer heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import msgspec
import nats.errors
import prometheus_client
import structlog
from aiohttp import web
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from services.heartbeat import queries
from services.heartbeat.consumers import TRANSITIONS
from shared import outbox
from shared.app_keys import SETTINGS
from shared.bus import JS
from shared.db import POOL
from shared.events import PresenceChanged, ScreenConfigChanged, subject_of_type

log = structlog.get_logger()

WATCHED = prometheus_client.Gauge("presence_watched_screens", "Screens the presence watch keeps in memory")
_PRESENCE_SUBJECT = subject_of_type(PresenceChanged)
_CONFIG_SUBJECT = subject_of_type(ScreenConfigChanged)
_config_changed = msgspec.json.Decoder(ScreenConfigChanged)
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
        # Screens whose time is an assumption (the watch's start, an interval's change), never a
        # "last seen" to store, with the newest heartbeat heard before it (None: none).
        self.assumed: dict[str, float | None] = {}
        # Config versions heard in events and not yet seen in the database: screen -> version.
        self.configs: dict[str, int] = {}

    def window(self, interval_minutes: int) -> float:
        return self.intervals * 60 * interval_minutes

    def hear(self, screen_id: str, at: float) -> None:
        entry = self.heard.get(screen_id)
        if entry is None:
            # Until the database says otherwise, the shortest interval there is (a minute).
            self.add(screen_id, at, self.window(1))
        elif at > entry[0]:
            entry[0] = at
            self.assumed.pop(screen_id, None)
        elif screen_id in self.assumed and at > (self.assumed[screen_id] or 0):
            self.assumed[screen_id] = at  # older than the assumed time: the deadline stays
        self.read_up_to = max(self.read_up_to, at)

    def add(self, screen_id: str, at: float, window: float) -> None:
        self.heard[screen_id] = [at, window]
        self._look_at(screen_id, at + window)

    def _look_at(self, screen_id: str, when: float) -> None:
        self.due.setdefault(math.ceil(when * _TICKS), []).append(screen_id)

    def reconfigure(
        self, screen_id: str, version: int, interval_minutes: int, *, at: float, learnt_within: float
    ) -> None:
        """A screen's interval changed (config ``version``, announced at ``at``; its TV learns of
        it within ``learnt_within`` seconds, its config's poll). A shorter one cuts the deadline to
        its new window after the TV can have learnt of it, never to sooner than that window after
        its last heartbeat: a TV that kept to its old interval is not overdue on the new one (as
        the stored deadline, see :func:`queries.upsert_screen`). It is looked at then."""
        entry = self.heard.get(screen_id)
        if entry is None or version <= self.configs.get(screen_id, 0):
            return
        self.configs[screen_id] = version
        window = self.window(interval_minutes)
        if window < entry[1]:
            deadline = max(entry[0] + window, min(entry[0] + entry[1], at + learnt_within + window))
            if deadline - window > entry[0]:  # counted from a time of no heartbeat: never stored
                self.assumed.setdefault(screen_id, entry[0])
                entry[0] = deadline - window
            # The look already due at the old deadline stays; a look is cheap, and it stops once
            # the screen is found offline.
            self._look_at(screen_id, deadline)
        entry[1] = window

    def settle(self, screen_id: str, version: int, interval_minutes: int) -> None:
        """The database's interval for the screen, unless an event told of a newer one."""
        entry = self.heard.get(screen_id)
        heard = self.configs.get(screen_id)
        if heard is not None and version >= heard:
            del self.configs[screen_id]
        if entry is not None and (heard is None or version >= heard):
            entry[1] = self.window(interval_minutes)

    def last_heard(self, screen_id: str) -> float | None:
        """The time of the screen's newest heartbeat heard; None when none was (only assumed): the
        row's own last seen then stays."""
        if screen_id in self.assumed:
            return self.assumed[screen_id]
        entry = self.heard.get(screen_id)
        return None if entry is None else entry[0]

    def assume(self, screen_id: str, at: float, window: float) -> None:
        """A screen online in the database when the watch starts, unless heard already."""
        if screen_id not in self.heard:
            self.add(screen_id, at, window)
            self.assumed[screen_id] = None

    def overdue(self, now: float) -> list[tuple[str, float]]:
        """The screens past their deadline at ``now``, with the time it counts from; each is
        looked at again at the next check unless :meth:`forget` is called meanwhile."""
        # Taken out first: a look scheduled now lands in a later sweep, never in this one.
        due = [self.due.pop(tick) for tick in sorted(tick for tick in self.due if tick <= now * _TICKS)]
        found = []
        looked: set[str] = set()  # a screen whose interval was shortened is due twice
        for screen in itertools.chain.from_iterable(due):
            entry = self.heard.get(screen)
            if entry is None or screen in looked:
                continue
            looked.add(screen)
            deadline = entry[0] + entry[1]
            if deadline <= now:
                found.append((screen, entry[0]))
                self._look_at(screen, now)
            else:
                self._look_at(screen, deadline)
                # Looked at alive: by the next look the database has long had the change, and a
                # fleet reconfigured at once is not remembered for as long as it lives.
                self.configs.pop(screen, None)
        return found

    def forget(self, screen_id: str) -> None:
        self.heard.pop(screen_id, None)
        self.assumed.pop(screen_id, None)
        self.configs.pop(screen_id, None)


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
    async with contextlib.AsyncExitStack() as subscriptions:
        subscription = await app[JS].subscribe(
            "", stream="HEARTBEATS", cb=on_message, ordered_consumer=True, config=config
        )
        subscriptions.push_async_callback(subscription.unsubscribe)
        subscriptions.push_async_callback((await _follow_config_changes(app, watch)).unsubscribe)
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


async def _follow_config_changes(app: web.Application, watch: Watch) -> JetStreamContext.PushSubscription:
    """Every screen's new interval as registry announces it, timed by the stream.

    It starts at the newest change already there (older than anything heard, so it moves no
    deadline): nats-py's ordered consumer, when it has to start again, starts after the last
    message it delivered, and before any, from the stream's first."""

    async def on_config(message: Msg) -> None:
        try:
            event = _config_changed.decode(message.data)
        except msgspec.DecodeError:
            return  # the screens consumer reports it; the database's interval applies at the look
        watch.reconfigure(
            str(event.screen_id),
            event.version,
            event.config.heartbeat_interval_minutes,
            at=message.metadata.timestamp.timestamp(),
            learnt_within=event.config.sync_interval_minutes * 60,
        )

    config = api.ConsumerConfig(filter_subject=_CONFIG_SUBJECT, deliver_policy=api.DeliverPolicy.LAST)
    return await app[JS].subscribe("", stream="EVENTS", cb=on_config, ordered_consumer=True, config=config)


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
                watch.settle(screen, state.version, state.interval_minutes)
                if seen + entry[1] <= now:
                    stopped.append(state.screen_id)
            heard = [datetime.fromtimestamp(batch[str(s)], UTC) for s in stopped]
            last_seen = [_utc(watch.last_heard(str(s))) for s in stopped]
            transitions = await queries.mark_stopped_offline(conn, stopped, heard, last_seen, intervals)
            for transition in transitions:
                await outbox.add_event(conn, transition.event())
        for transition in transitions:
            watch.forget(str(transition.screen_id))
            TRANSITIONS.labels("offline").inc()
            log.info("presence_changed", screen_id=str(transition.screen_id), presence="offline")


def _utc(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, UTC)
