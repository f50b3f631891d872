-- What the pruning looks for: revoked keys past their retention (their rows and gateway entries
-- go), and provisioning tokens that expired without binding a device.
CREATE INDEX device_keys_revoked ON device_keys (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX provisioning_tokens_unbound_by_expiry ON provisioning_tokens (expires_at)
    WHERE device_id IS NULL;
