-- Presence states and transitions, and the copy of registry's screens they need (the interval).
CREATE TABLE screens (
    id                          uuid PRIMARY KEY,
    tenant_id                   uuid NOT NULL,
    version                     bigint NOT NULL,
    heartbeat_interval_minutes  integer NOT NULL DEFAULT 1
);
CREATE INDEX screens_by_tenant ON screens (tenant_id);

-- Rows from before this migration were never announced: offline with sequence 0, so the next
-- heartbeat is a transition that registry hears of.
ALTER TABLE presence
    ADD COLUMN status        text NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'offline')),
    ADD COLUMN offline_after timestamptz,
    ADD COLUMN presence_seq  bigint NOT NULL DEFAULT 0;
UPDATE presence SET offline_after = last_seen_at;
ALTER TABLE presence ALTER COLUMN offline_after SET NOT NULL;
-- The detector's question, "who is online but overdue?", reads only this index.
CREATE INDEX presence_overdue ON presence (offline_after) WHERE status = 'online';
