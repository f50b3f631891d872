"""Offline alerts worth receiving: a paired screen that stays offline for its alert delay, within
its venue's opening hours, is alerted once (``ScreenOfflineAlert``) and announced back
(``ScreenOnlineAlert``); most of a venue's screens offline together are one venue incident
(``VenueOfflineAlert``, then ``VenueOnlineAlert``) instead of an alert each.

Presence changes open and close alerts in the transaction that applies them (``consumers``), so
an alert's events go into the outbox with the presence they follow and none is lost. A sweep on
every replica fires the alerts come due."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import structlog
from aiohttp import web

from services.registry import queries
from services.registry.opening_hours import is_open, next_opening, zone
from services.registry.queries.alerts import AlertScreen, DueAlert, DueVenue
from shared import outbox
from shared.app_keys import SETTINGS
from shared.db import POOL, Connection
from shared.events import (
    PresenceChanged,
    ScreenOfflineAlert,
    ScreenOnlineAlert,
    VenueOfflineAlert,
    VenueOnlineAlert,
)
from shared.settings import Settings
from shared.tasks import background

log = structlog.get_logger()


async def presence_changed(conn: Connection, event: PresenceChanged, settings: Settings) -> None:
    """Open or close the screen's alert for a presence change just applied (a newer one)."""
    screen = await queries.alerts.lock_screen_venue(conn, event.screen_id)
    if screen is None:
        return
    if event.presence == "online":
        await _close(conn, screen, event)
    elif screen.paired:  # a screen never paired (or unpaired since) is nobody's concern
        minutes = _delay_minutes(screen.delay_minutes, settings)
        await queries.alerts.open_alert(
            conn,
            screen,
            offline_since=event.occurred_at,
            last_seen_at=event.last_seen_at,
            due_at=event.occurred_at + timedelta(minutes=minutes),
        )


async def screen_unpaired(conn: Connection, screen_id: uuid.UUID) -> None:
    """Drop the open alert of a screen whose device was revoked: no more alerts for it."""
    screen = await queries.alerts.lock_screen_venue(conn, screen_id)
    if screen is not None:
        await _close(conn, screen, None)


async def _close(conn: Connection, screen: AlertScreen, back: PresenceChanged | None) -> None:
    """Close the screen's open alert: a pending one silently (flapping within the delay is no
    news); one alerted or folded into an incident with ``ScreenOnlineAlert`` when the screen is
    ``back``; the incident with ``VenueOnlineAlert`` when its last screen is back or unpaired."""
    closed = await queries.alerts.close_alert(conn, screen.id)
    if closed is None:
        return
    if back is not None and closed.state != "pending":
        await outbox.add_event(
            conn,
            ScreenOnlineAlert(
                tenant_id=screen.tenant_id,
                venue_id=screen.venue_id,
                screen_id=screen.id,
                screen_name=screen.name,
                last_seen_at=back.last_seen_at,
                incident_id=closed.incident_id,
            ),
        )
        log.info("screen_online_alert", screen_id=str(screen.id))
    if closed.incident_id is None:
        return
    venue_name = await queries.alerts.close_incident_if_over(conn, closed.incident_id)
    if venue_name is not None:
        await outbox.add_event(
            conn,
            VenueOnlineAlert(
                tenant_id=screen.tenant_id,
                venue_id=screen.venue_id,
                incident_id=closed.incident_id,
                venue_name=venue_name,
            ),
        )
        log.info("venue_online_alert", venue_id=str(screen.venue_id), incident_id=str(closed.incident_id))


def _delay_minutes(own: int | None, settings: Settings) -> float:
    """The screen's delay, else its venue's (``own`` is the first of them set), else the setting."""
    return settings.offline_alert_after_minutes if own is None else own


# ---- the sweep ------------------------------------------------------------------------------------


async def fire_due(app: web.Application) -> None:
    """Every ``alert_check_seconds``: the pending alerts come due, a venue at a time."""
    while True:
        await asyncio.sleep(app[SETTINGS].alert_check_seconds)
        while await _fire_venue(app):
            pass


async def _fire_venue(app: web.Application) -> bool:
    """Decide the due alerts of one venue in one transaction; False when none was left."""
    settings = app[SETTINGS]
    async with app[POOL].acquire() as conn, conn.transaction():
        venue = await queries.alerts.lock_venue_with_due(conn)
        if venue is None:
            return False
        due = await queries.alerts.due_alerts(conn, venue.id)
        tz = zone(venue.timezone)
        if not is_open(venue.now, venue.opening_hours, tz):
            # Closed: no alert now; a screen still dark when the venue opens is alerted then.
            opening = next_opening(venue.now, venue.opening_hours, tz)
            await queries.alerts.postpone(conn, [alert.screen_id for alert in due], opening)
            log.info("offline_alerts_postponed", venue_id=str(venue.id), screens=len(due), until=opening)
            return True
        for alert in due:
            await _fire(conn, venue, alert, settings)
    return True


async def _fire(conn: Connection, venue: DueVenue, alert: DueAlert, settings: Settings) -> None:
    incident_id = await queries.alerts.open_incident_of(conn, venue.id)
    if incident_id is not None:  # the venue is down already: one more screen of its incident
        await queries.alerts.fold(conn, incident_id, [alert.screen_id])
        return
    paired = await queries.alerts.paired_screens(conn, venue.id)
    if paired >= settings.venue_incident_min_screens:
        window = timedelta(minutes=settings.venue_incident_window_minutes)
        together = await queries.alerts.offline_near(conn, venue.id, alert.offline_since, window)
        if len(together) > settings.venue_incident_share * paired:
            incident_id = await queries.alerts.insert_incident(conn, venue.tenant_id, venue.id, paired)
            await queries.alerts.fold(conn, incident_id, together)
            await outbox.add_event(
                conn,
                VenueOfflineAlert(
                    tenant_id=venue.tenant_id,
                    venue_id=venue.id,
                    incident_id=incident_id,
                    venue_name=venue.name,
                    screen_ids=together,
                    screens_total=paired,
                ),
            )
            log.info("venue_offline_alert", venue_id=str(venue.id), screens=len(together), paired=paired)
            return
    await queries.alerts.mark_alerted(conn, alert.screen_id)
    await outbox.add_event(
        conn,
        ScreenOfflineAlert(
            tenant_id=venue.tenant_id,
            venue_id=venue.id,
            screen_id=alert.screen_id,
            screen_name=alert.screen_name,
            last_seen_at=alert.last_seen_at,
            offline_alert_after_minutes=round(_delay_minutes(alert.delay_minutes, settings)),
        ),
    )
    log.info("screen_offline_alert", screen_id=str(alert.screen_id))


alerts_ctx = background("registry-offline-alerts", fire_due)
