-- Budgets of attempts with a proof, per flow (pairing codes, serials, user codes...), caller and
-- fixed window; `used` counts slots taken (an attempt takes one before it runs and gives it back
-- when it succeeds), and for the caller '*' all callers' failures of the flow together.
-- registration_failures, which counted every flow in one budget, is no longer written; a later
-- release drops it.
CREATE TABLE attempt_budgets (
    flow          text NOT NULL,
    who           text NOT NULL,
    window_start  timestamptz NOT NULL,
    used          integer NOT NULL,
    PRIMARY KEY (flow, who, window_start)
);
CREATE INDEX attempt_budgets_by_window ON attempt_budgets (window_start);

-- What the pruning looks for: expired rows that bound no device.
CREATE INDEX device_authorizations_unbound_by_expiry ON device_authorizations (expires_at)
    WHERE device_id IS NULL;
CREATE INDEX provisioning_codes_unbound_by_expiry ON provisioning_codes (expires_at)
    WHERE device_id IS NULL;
