-- The transactional outbox of a service's schema (shared.outbox). Applied to every schema that
-- publishes, before the service's own migrations.
CREATE TABLE outbox (
    seq        bigserial PRIMARY KEY,
    id         uuid NOT NULL,
    subject    text NOT NULL,
    payload    bytea NOT NULL,
    request_id text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- NOTIFY is delivered at commit, so the relay wakes exactly when a message becomes visible.
CREATE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox();
