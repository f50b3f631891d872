-- Heartbeat owns presence: when each screen was last heard from, and what it last reported.
CREATE TABLE presence (
    screen_id      uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL,
    device_id      uuid NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    last_heartbeat jsonb NOT NULL
);
CREATE INDEX presence_by_tenant ON presence (tenant_id);
