-- Fleet status from counters kept with the transitions, not a count over the tenant's screens.
--
-- Each tenant has up to 16 rows (shards), summed when read: a transaction adds its deltas to the
-- row of its backend (pg_backend_pid() % 16), so replicas applying batches at once rarely wait on
-- one another's row. Statement triggers with transition tables fold a whole batch into one
-- update per tenant. The counts follow the join the API always answered: the screens the service
-- knows of (registry's events), each counted as online or offline when it has a presence row.
CREATE TABLE fleet_counts (
    tenant_id  uuid NOT NULL,
    shard      smallint NOT NULL,
    screens    bigint NOT NULL DEFAULT 0,
    online     bigint NOT NULL DEFAULT 0,
    offline    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, shard)
);

-- A screen row and its presence row may be created by two transactions at once, neither seeing
-- the other's. Both sides serialize on a transaction lock named after the screen: the screen's
-- side always takes it; the presence side takes it when it does not see the screen, then looks
-- again with a fresh snapshot. Whichever commits second sees the first and counts the pair.
-- (Two bulk writes, one on each side at once, may deadlock on their table locks; the server
-- ends one, and a consumer's batch is redelivered.)
CREATE FUNCTION lock_screen_pair(screen_ids uuid[], other_side regclass) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    screen uuid;
BEGIN
    IF cardinality(screen_ids) > 64 THEN
        -- Many screens at once (a bulk load, a fleet's first heartbeats before registry's events):
        -- a lock each would fill the server's lock table. One lock on the other side's table
        -- instead: it waits for that side's writers in flight and holds new ones until commit.
        EXECUTE format('LOCK TABLE %s IN SHARE MODE', other_side);
        RETURN;
    END IF;
    -- In one order everywhere, so two transactions never wait on each other in a circle.
    FOR screen IN SELECT DISTINCT ids.id FROM unnest(screen_ids) AS ids(id) ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(7419, hashtext(screen::text));
    END LOOP;
END $$;

CREATE FUNCTION count_new_screens() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM lock_screen_pair(ARRAY(SELECT id FROM added), 'presence');
    INSERT INTO fleet_counts AS c (tenant_id, shard, screens, online, offline)
    SELECT a.tenant_id, pg_backend_pid() % 16, count(*),
           count(*) FILTER (WHERE p.status = 'online'), count(*) FILTER (WHERE p.status = 'offline')
    FROM added a LEFT JOIN presence p ON p.screen_id = a.id
    GROUP BY a.tenant_id ORDER BY a.tenant_id
    ON CONFLICT (tenant_id, shard) DO UPDATE SET screens = c.screens + EXCLUDED.screens,
        online = c.online + EXCLUDED.online, offline = c.offline + EXCLUDED.offline;
    RETURN NULL;
END $$;

-- changed: screen_id, the status it leaves (NULL for a new row) and the one it takes.
CREATE FUNCTION apply_presence_changes(changed_ids uuid[], left_status text[], new_status text[])
RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF cardinality(changed_ids) = 0 THEN
        RETURN;
    END IF;
    PERFORM lock_screen_pair(ARRAY(
        SELECT ch.id FROM unnest(changed_ids) AS ch(id)
        WHERE NOT EXISTS (SELECT 1 FROM screens s WHERE s.id = ch.id)
    ), 'screens');
    INSERT INTO fleet_counts AS c (tenant_id, shard, screens, online, offline)
    SELECT s.tenant_id, pg_backend_pid() % 16, 0,
           count(*) FILTER (WHERE ch.to_status = 'online') - count(*) FILTER (WHERE ch.from_status = 'online'),
           count(*) FILTER (WHERE ch.to_status = 'offline') - count(*) FILTER (WHERE ch.from_status = 'offline')
    FROM unnest(changed_ids, left_status, new_status) AS ch(screen_id, from_status, to_status)
    JOIN screens s ON s.id = ch.screen_id
    GROUP BY s.tenant_id ORDER BY s.tenant_id
    ON CONFLICT (tenant_id, shard) DO UPDATE SET
        online = c.online + EXCLUDED.online, offline = c.offline + EXCLUDED.offline;
END $$;

CREATE FUNCTION count_new_presence() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM apply_presence_changes(
        ARRAY(SELECT screen_id FROM added ORDER BY screen_id),
        ARRAY(SELECT NULL::text FROM added),
        ARRAY(SELECT status FROM added ORDER BY screen_id)
    );
    RETURN NULL;
END $$;

-- A statement's old and new rows are matched by their order (an UPDATE changes a row once, and
-- never its screen_id), not joined: the planner cannot tell how many rows they hold, and a
-- nested loop over them was quadratic (20,000 rows updated at once: 56 s; this way 0.4 s).
CREATE FUNCTION count_presence_transitions() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    ids uuid[];
    froms text[];
    tos text[];
BEGIN
    SELECT array_agg(screen_id ORDER BY screen_id), array_agg(status ORDER BY screen_id)
    INTO ids, froms FROM before_rows;
    SELECT array_agg(status ORDER BY screen_id) INTO tos FROM after_rows;
    SELECT coalesce(array_agg(c.id ORDER BY c.n), '{}'),
           coalesce(array_agg(c.from_status ORDER BY c.n), '{}'),
           coalesce(array_agg(c.to_status ORDER BY c.n), '{}')
    INTO ids, froms, tos
    FROM unnest(ids, froms, tos) WITH ORDINALITY AS c(id, from_status, to_status, n)
    WHERE c.from_status <> c.to_status;
    PERFORM apply_presence_changes(ids, froms, tos);
    RETURN NULL;
END $$;

CREATE TRIGGER screens_counted AFTER INSERT ON screens
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION count_new_screens();
CREATE TRIGGER presence_counted AFTER INSERT ON presence
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION count_new_presence();
CREATE TRIGGER presence_transitions_counted AFTER UPDATE ON presence
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_presence_transitions();

-- The starting counts. Writers wait for this scan (about a second at a million screens): the
-- triggers count from the next write on, so no write may fall between the count and them.
LOCK TABLE screens, presence IN SHARE MODE;
INSERT INTO fleet_counts (tenant_id, shard, screens, online, offline)
SELECT s.tenant_id, 0, count(*), count(*) FILTER (WHERE p.status = 'online'),
       count(*) FILTER (WHERE p.status = 'offline')
FROM screens s LEFT JOIN presence p ON p.screen_id = s.id
GROUP BY s.tenant_id;
