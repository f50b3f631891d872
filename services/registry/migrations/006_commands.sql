-- Remote commands an admin sends a screen's TV (reload, reboot, screenshot, ...): pending until
-- the TV is handed one (delivered), then succeeded or failed by its report; expired once
-- expires_at passes while open, or cancelled by an admin.
CREATE TABLE commands (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    screen_id       uuid NOT NULL REFERENCES screens (id),
    type            text NOT NULL,
    args            jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'succeeded', 'failed', 'expired', 'cancelled')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    delivered_at    timestamptz,
    completed_at    timestamptz,
    -- what the TV reported with its result
    result_message  text,
    result_data     jsonb,
    -- the audit trail's actor: the API client that sent it
    created_by      text NOT NULL
);
-- A screen's commands, all of them or by status, oldest first (the admin's list, the open set).
CREATE INDEX commands_by_screen ON commands (screen_id, created_at, id);
CREATE INDEX commands_by_screen_status ON commands (screen_id, status, created_at, id);
-- The expiry sweep reads only the open ones, soonest first.
CREATE INDEX commands_open_by_expiry ON commands (expires_at) WHERE status IN ('pending', 'delivered');
