-- Offline alerts: a paired screen offline for its alert delay (the screen's, else its venue's, else
-- the setting), within its venue's opening hours, is alerted; most of a venue's screens offline
-- together are one venue incident instead.

-- NULL opening hours: always open. A list of {"days": [...], "open": "HH:MM", "close": "HH:MM"}.
ALTER TABLE venues ADD COLUMN opening_hours jsonb;
-- NULL: the setting OFFLINE_ALERT_AFTER_MINUTES.
ALTER TABLE venues ADD COLUMN offline_alert_after_minutes integer;
-- NULL: the venue's.
ALTER TABLE screens ADD COLUMN offline_alert_after_minutes integer;

-- A venue incident: opened with one venue.offline, closed with one venue.online once every
-- screen folded into it is back (or unpaired).
CREATE TABLE venue_incidents (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    venue_id       uuid NOT NULL REFERENCES venues (id),
    opened_at      timestamptz NOT NULL DEFAULT now(),
    closed_at      timestamptz,
    -- every screen folded into it, those that joined after it opened too
    screen_ids     uuid[] NOT NULL,
    -- the venue's paired screens when it opened
    screens_total  integer NOT NULL
);
-- At most one open incident a venue.
CREATE UNIQUE INDEX venue_incidents_open ON venue_incidents (venue_id) WHERE closed_at IS NULL;

-- A screen's open alert, from its going offline until it is back online (or unpaired): pending
-- until due_at, then alerted (screen.offline sent) or folded into a venue incident. Closed alerts
-- are deleted: the events on the bus are their history.
CREATE TABLE screen_alerts (
    screen_id      uuid PRIMARY KEY REFERENCES screens (id),
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    venue_id       uuid NOT NULL REFERENCES venues (id),
    -- when the heartbeat service declared it offline, and when it last heard of it
    offline_since  timestamptz NOT NULL,
    last_seen_at   timestamptz,
    due_at         timestamptz NOT NULL,
    state          text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'alerted', 'folded')),
    incident_id    uuid REFERENCES venue_incidents (id),
    CHECK ((state = 'folded') = (incident_id IS NOT NULL))
);
-- The sweep reads only pending alerts come due, soonest first.
CREATE INDEX screen_alerts_due ON screen_alerts (due_at) WHERE state = 'pending';
-- A venue's offline screens by when they went offline (the incident window).
CREATE INDEX screen_alerts_by_venue ON screen_alerts (venue_id, offline_since);
CREATE INDEX screen_alerts_by_incident ON screen_alerts (incident_id) WHERE incident_id IS NOT NULL;
