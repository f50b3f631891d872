-- The ways of binding beyond screen-first codes (docs/flows.md), on the same devices
-- and keys, and the audit trail that every bind and unbind writes.

-- A TV may report a stable hardware id; with the recovery secret it got at its first bind it can
-- get a fresh key after a factory reset (only the hash is kept, as for keys).
ALTER TABLE devices ADD COLUMN hardware_id text;
ALTER TABLE devices ADD COLUMN recovery_secret_hash bytea;
CREATE INDEX devices_by_hardware ON devices (tenant_id, hardware_id) WHERE hardware_id IS NOT NULL;
CREATE UNIQUE INDEX devices_by_recovery_secret ON devices (recovery_secret_hash)
    WHERE recovery_secret_hash IS NOT NULL;

-- On-demand provisioning: a single-use, short-lived token an admin hands to a device.
CREATE TABLE provisioning_tokens (
    token_hash  bytea PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    screen_id   uuid NOT NULL REFERENCES screens (id),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    device_id   uuid REFERENCES devices (id)
);

-- Who bound or unbound which device to which screen, how, when and from where.
CREATE TABLE binding_audit (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    tenant_id       uuid NOT NULL,
    device_id       uuid NOT NULL REFERENCES devices (id),
    screen_id       uuid NOT NULL,
    action          text NOT NULL CHECK (action IN ('bound', 'unbound', 'recovered')),
    method          text NOT NULL,
    actor           text NOT NULL,
    client_address  text,
    reason          text
);
CREATE INDEX binding_audit_by_device ON binding_audit (tenant_id, device_id, id);

-- What happened before the trail existed, from the devices themselves.
INSERT INTO binding_audit (at, tenant_id, device_id, screen_id, action, method, actor, client_address)
    SELECT registered_at, tenant_id, id, screen_id, 'bound', 'code', 'device', registered_from FROM devices;
INSERT INTO binding_audit (at, tenant_id, device_id, screen_id, action, method, actor, reason)
    SELECT revoked_at, tenant_id, id, screen_id, 'unbound', 'revoke', 'unknown', revoke_reason
    FROM devices WHERE revoked_at IS NOT NULL;

-- Device-first pairing (RFC 8628): the TV asks for a device code and shows the user code; an
-- admin approves it for a screen; the TV's next poll of the token endpoint binds and gets its
-- key (made then, so only its hash is ever stored).
CREATE TABLE device_authorizations (
    device_code_hash  bytea PRIMARY KEY,
    user_code         text NOT NULL UNIQUE,
    client_id         text NOT NULL,
    device_info       jsonb NOT NULL,
    requested_from    text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    interval_seconds  integer NOT NULL,
    last_polled_at    timestamptz,
    status            text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'delivered')),
    tenant_id         uuid,
    screen_id         uuid REFERENCES screens (id),
    decided_by        text,
    decided_at        timestamptz,
    device_id         uuid REFERENCES devices (id)
);

-- Pre-provisioned devices (claim mode): an id and a key made ahead for factory flashing, owned by
-- no tenant until claimed. Claim mode gives the device a short-lived claim code; a tenant admin
-- claims it onto a screen, and the device row is made then, with this id and this key.
CREATE TABLE factory_devices (
    id                    uuid PRIMARY KEY,
    key_hash              bytea NOT NULL UNIQUE,
    created_at            timestamptz NOT NULL DEFAULT now(),
    claim_code_hash       bytea UNIQUE,
    claim_expires_at      timestamptz,
    device_info           jsonb,
    claim_requested_from  text,
    claimed_at            timestamptz
);

-- Serial numbers registered ahead: each for a screen of the tenant that uploaded it.
-- Enabling a serial opens its activation window; a device activates with its serial inside it,
-- once. A serial is one physical device, so it is unique across tenants.
CREATE TABLE serials (
    serial         text PRIMARY KEY,
    tenant_id      uuid NOT NULL,
    screen_id      uuid NOT NULL REFERENCES screens (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    enabled_until  timestamptz,
    activated_at   timestamptz,
    device_id      uuid REFERENCES devices (id)
);
CREATE INDEX serials_by_tenant ON serials (tenant_id, created_at, serial);
