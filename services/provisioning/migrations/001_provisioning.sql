-- Provisioning owns codes, devices and device keys (hashes only), and a copy of screens.

-- Built from registry's screen events; version drops stale redeliveries. binding_seq counts the
-- binds and unbinds of the screen (carried on our events so registry can order them).
CREATE TABLE screens (
    id                          uuid PRIMARY KEY,
    tenant_id                   uuid NOT NULL,
    version                     bigint NOT NULL,
    sync_interval_minutes       integer NOT NULL DEFAULT 5,
    heartbeat_interval_minutes  integer NOT NULL DEFAULT 1,
    cache_max_size_gb           double precision NOT NULL DEFAULT 10,
    cache_retention_days        integer NOT NULL DEFAULT 7,
    binding_seq                 bigint NOT NULL DEFAULT 0
);

CREATE TABLE devices (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    screen_id       uuid NOT NULL REFERENCES screens (id),
    status          text NOT NULL CHECK (status IN ('active', 'suspended')),
    device_info     jsonb NOT NULL,
    registered_from text,
    registered_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    revoke_reason   text
);
-- The invariant of binding: a screen has at most one active device.
CREATE UNIQUE INDEX one_active_device_per_screen ON devices (screen_id) WHERE status = 'active';
CREATE INDEX devices_by_tenant ON devices (tenant_id, registered_at, id);

CREATE TABLE device_keys (
    key_hash   bytea PRIMARY KEY,
    device_id  uuid NOT NULL REFERENCES devices (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX device_keys_by_device ON device_keys (device_id);

CREATE TABLE provisioning_codes (
    code          text PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    screen_id     uuid NOT NULL REFERENCES screens (id),
    -- 'expired' is not stored: a pending code past expires_at is expired
    status        text NOT NULL CHECK (status IN ('pending', 'bound', 'superseded', 'revoked')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    bound_at      timestamptz,
    device_id     uuid REFERENCES devices (id)
);
CREATE UNIQUE INDEX one_pending_code_per_screen ON provisioning_codes (screen_id) WHERE status = 'pending';
CREATE INDEX codes_by_device ON provisioning_codes (device_id);

-- Failed registrations per client address and fixed window, shared by every replica.
CREATE TABLE registration_failures (
    client_address text NOT NULL,
    window_start   timestamptz NOT NULL,
    failures       integer NOT NULL,
    PRIMARY KEY (client_address, window_start)
);
