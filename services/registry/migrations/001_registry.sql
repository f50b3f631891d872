-- Registry owns tenants, their API clients, venues, screens, playlists and screen config.
CREATE TABLE tenants (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_clients (
    client_id   text PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE venues (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    name       text NOT NULL,
    timezone   text,
    address    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX venues_by_tenant ON venues (tenant_id, created_at, id);

CREATE TABLE screens (
    id                          uuid PRIMARY KEY,
    tenant_id                   uuid NOT NULL REFERENCES tenants (id),
    venue_id                    uuid NOT NULL REFERENCES venues (id),
    name                        text NOT NULL,
    orientation                 text,
    resolution                  text,
    state                       text NOT NULL DEFAULT 'provisioning'
                                CHECK (state IN ('provisioning', 'active')),
    device_id                   uuid,
    -- binding_seq of the last provisioning event applied (events may arrive late or twice)
    binding_seq                 bigint NOT NULL DEFAULT 0,
    presence                    text NOT NULL DEFAULT 'unknown'
                                CHECK (presence IN ('unknown', 'online', 'offline')),
    last_seen_at                timestamptz,
    -- every change of what the screen's copies in other services hold bumps version
    version                     bigint NOT NULL DEFAULT 1,
    sync_interval_minutes       integer NOT NULL DEFAULT 5,
    heartbeat_interval_minutes  integer NOT NULL DEFAULT 1,
    cache_max_size_gb           double precision NOT NULL DEFAULT 10,
    cache_retention_days        integer NOT NULL DEFAULT 7,
    playlist_version            integer NOT NULL DEFAULT 0,
    playlist_items              jsonb NOT NULL DEFAULT '[]',
    playlist_updated_at         timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX screens_by_tenant ON screens (tenant_id, created_at, id);
CREATE INDEX screens_by_venue ON screens (venue_id, created_at, id);
