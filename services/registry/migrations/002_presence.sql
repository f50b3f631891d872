-- Presence is the heartbeat service's; registry keeps the last transition it heard of, in order.
ALTER TABLE screens ADD COLUMN presence_seq bigint NOT NULL DEFAULT 0;
