-- Webhook endpoints a tenant registers, and every event's delivery to each endpoint subscribed to it.
CREATE TABLE webhook_endpoints (
    id                     uuid PRIMARY KEY,
    tenant_id              uuid NOT NULL REFERENCES tenants (id),
    url                    text NOT NULL,
    -- webhook event types (device.bound, screen.offline, ...) this endpoint receives
    events                 text[] NOT NULL,
    description            text,
    -- false: turned off by an admin (disabled_reason NULL) or by the system ('gone': the
    -- receiver answered 410; 'failing': no delivery succeeded for days)
    enabled                boolean NOT NULL DEFAULT true,
    disabled_reason        text CHECK (disabled_reason IN ('gone', 'failing')),
    -- Signs every delivery, so it is kept as issued (a hash could not sign). After a rotation the
    -- previous secret signs alongside until previous_secret_until.
    secret                 text NOT NULL,
    previous_secret        text,
    previous_secret_until  timestamptz,
    -- the first failure since the last success (NULL while deliveries succeed)
    failing_since          timestamptz,
    last_success_at        timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant_id, created_at, id);

-- One event (or ping) to one endpoint: pending until a 2xx (delivered) or until the retry
-- schedule is spent or the endpoint is turned off (failed).
CREATE TABLE webhook_deliveries (
    id                uuid PRIMARY KEY,
    endpoint_id       uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    tenant_id         uuid NOT NULL,
    -- the webhook-id header: the event's id, the same on every attempt, so receivers de-duplicate
    message_id        text NOT NULL,
    event_type        text NOT NULL,
    -- the body exactly as sent and signed on every attempt: {"type", "timestamp", "data"}
    payload           text NOT NULL,
    state             text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    last_status_code  integer,
    last_error        text,
    last_attempt_at   timestamptz,
    -- when the next attempt is due; while an attempt is in flight, when its claim lapses (a
    -- replica that died mid-delivery leaves it to be sent again: delivery is at least once)
    next_attempt_at   timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz,
    -- an event redelivered by the bus becomes no second delivery
    UNIQUE (endpoint_id, message_id)
);
-- The dispatcher reads the due ones, soonest first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
-- An endpoint's delivery log, newest first (the admin's list).
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, created_at, id);
-- Pruning the log of settled deliveries past their retention.
CREATE INDEX webhook_deliveries_settled ON webhook_deliveries (created_at) WHERE state <> 'pending';
