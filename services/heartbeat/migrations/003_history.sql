-- Every heartbeat, kept for HEARTBEAT_RETENTION_HOURS and then pruned in batches. A redelivered
-- heartbeat has the same (screen, receivedAt) and is not stored twice.
CREATE TABLE heartbeats (
    screen_id   uuid NOT NULL,
    received_at timestamptz NOT NULL,
    tenant_id   uuid NOT NULL,
    report      jsonb NOT NULL,
    PRIMARY KEY (screen_id, received_at)
);
CREATE INDEX heartbeats_by_age ON heartbeats (received_at);
