-- API clients beyond a tenant's first: registered by integrations themselves (RFC 7591) with an
-- initial access token their tenant's admin issued; listed and revoked by the tenant.
ALTER TABLE api_clients ADD COLUMN client_name text;
-- NULL: the secret does not expire (client_secret_expires_at 0 in RFC 7591's terms).
ALTER TABLE api_clients ADD COLUMN secret_expires_at timestamptz;
-- "operator" (the tenant's first client), or the admin client that issued the initial access token.
ALTER TABLE api_clients ADD COLUMN registered_by text NOT NULL DEFAULT 'operator';
CREATE INDEX api_clients_by_tenant ON api_clients (tenant_id, created_at, client_id);

CREATE TABLE initial_access_tokens (
    token_hash  bytea PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    issued_by   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    client_id   text REFERENCES api_clients (client_id)
);
