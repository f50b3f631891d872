-- The history, partitioned by received_at in ranges of six hours: a range past the retention is
-- dropped whole (no row-by-row DELETE, no vacuum debt) and the ranges are created ahead by the
-- service (services/heartbeat/history.py). A row holds the report without the ids its columns and
-- the screen's tenant already say; no index on received_at: partitions answer "how old".
--
-- The table from before stays, renamed, read alongside until its newest row is past the
-- retention, then dropped whole too: renaming takes its lock for an instant, whatever its size,
-- where copying or attaching it would scan it under a lock.
ALTER TABLE heartbeats RENAME TO heartbeats_before_partitions;
ALTER INDEX heartbeats_pkey RENAME TO heartbeats_before_partitions_pkey;
ALTER INDEX heartbeats_by_age RENAME TO heartbeats_before_partitions_by_age;

CREATE TABLE heartbeats (
    screen_id   uuid NOT NULL,
    received_at timestamptz NOT NULL,
    report      jsonb NOT NULL,
    PRIMARY KEY (screen_id, received_at)
) PARTITION BY RANGE (received_at);

-- The range holding ``start`` (a multiple of six hours), unless there is one; true if created.
-- DDL takes no parameters: the name and bounds are formatted here from a timestamp.
CREATE FUNCTION create_heartbeat_partition(start timestamptz) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    name text := 'heartbeats_p' || to_char(start AT TIME ZONE 'UTC', 'YYYYMMDD_HH24');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF heartbeats FOR VALUES FROM (%L) TO (%L)',
                   name, start, start + interval '6 hours');
    RETURN true;
END $$;

-- Each range of the history (name and bounds), oldest first.
CREATE VIEW heartbeat_partitions AS
SELECT c.relname::text AS name,
       -- the name's digits, read as UTC whatever the session's time zone
       to_timestamp(substr(c.relname, 13), 'YYYYMMDD_HH24')::timestamp AT TIME ZONE 'UTC' AS starts_at
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
-- only the ranges made above: another child (an operator's DEFAULT partition) must not stop pruning
WHERE i.inhparent = 'heartbeats'::regclass AND c.relname ~ '^heartbeats_p[0-9]{8}_[0-9]{2}$';

-- Drops a range of the history or the table from before partitioning, and nothing else.
CREATE FUNCTION drop_heartbeat_table(name text) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF name !~ '^heartbeats_p[0-9]{8}_[0-9]{2}$' AND name <> 'heartbeats_before_partitions' THEN
        RAISE EXCEPTION 'not a table of the heartbeat history: %', name;
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS %I', name);
END $$;
