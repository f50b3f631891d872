"""The settings of what registry tells operators: offline alerts (when a dark screen is news) and
webhooks (where events may be sent, how they are retried). Part of ``shared.settings.Settings``,
declared the same way: a field is its variable in capitals, its ``Meta`` the bounds and the line
of the settings table."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

_DAY = 24 * 3600


class NotificationSettings(msgspec.Struct, frozen=True, kw_only=True):
    offline_alert_after_minutes: Annotated[
        float,
        Meta(
            ge=0,
            le=30 * 24 * 60,
            description="how long a paired screen is offline before its `screen.offline` alert, unless its"
            " venue or the screen itself says (`offlineAlertAfterMinutes`)",
        ),
    ] = 15
    venue_incident_window_minutes: Annotated[
        float,
        Meta(
            gt=0,
            le=24 * 60,
            description="screens of a venue that go offline within this window count as one incident",
        ),
    ] = 5
    venue_incident_share: Annotated[
        float,
        Meta(
            gt=0,
            lt=1,
            description="more than this share of a venue's paired screens offline together: one"
            " `venue.offline` instead of an alert per screen",
        ),
    ] = 0.5
    venue_incident_min_screens: Annotated[
        int,
        Meta(ge=2, le=100_000, description="a venue needs this many paired screens for an incident"),
    ] = 2
    alert_check_seconds: Annotated[
        float, Meta(gt=0, le=3600, description="how often registry looks for offline alerts come due")
    ] = 5
    webhook_allow_private_addresses: Annotated[
        bool,
        Meta(
            description="webhooks may reach loopback, private, link-local and reserved addresses (on in"
            " `make run` and the tests; off in production: a tenant's URL must not reach inside)"
        ),
    ] = False
    webhook_allow_http: Annotated[
        bool, Meta(description="webhook URLs may be plain http (on in `make run` and the tests)")
    ] = False
    webhook_timeout_seconds: Annotated[
        float, Meta(gt=0, le=300, description="a webhook request gets this long to answer, all told")
    ] = 10
    webhook_concurrency_per_endpoint: Annotated[
        int,
        Meta(
            ge=1,
            le=100,
            description="per registry process: requests in flight to one endpoint (a slow one waits on"
            " its own, never another's)",
        ),
    ] = 4
    webhook_retry_first_seconds: Annotated[
        float,
        Meta(
            gt=0,
            le=3600,
            description="the first retry of a failed webhook delivery; each next one waits about six"
            " times longer (with jitter), up to `WEBHOOK_RETRY_MAX_INTERVAL_SECONDS`",
        ),
    ] = 5
    webhook_retry_max_interval_seconds: Annotated[
        float, Meta(gt=0, le=7 * _DAY, description="the longest wait between two attempts of a delivery")
    ] = 5 * 3600
    webhook_retry_for_hours: Annotated[
        float,
        Meta(gt=0, le=30 * 24, description="a delivery is retried this long after its event, then failed"),
    ] = 28
    webhook_disable_after_hours: Annotated[
        float,
        Meta(
            gt=0,
            le=365 * 24,
            description="an endpoint whose every delivery failed for this long is turned off, with an event",
        ),
    ] = 5 * 24
    webhook_secret_grace_hours: Annotated[
        float,
        Meta(
            ge=0,
            le=30 * 24,
            description="after a secret rotation, the old secret signs alongside the new one this long",
        ),
    ] = 24
    webhook_log_retention_days: Annotated[
        float, Meta(gt=0, le=3650, description="how long settled webhook deliveries stay in the delivery log")
    ] = 30
    webhooks_per_tenant: Annotated[
        int, Meta(ge=1, le=10_000, description="webhook endpoints a tenant may register")
    ] = 20
