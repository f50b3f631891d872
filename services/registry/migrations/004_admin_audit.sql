-- Every change a tenant's admins (or the operator) make: who, what, when, from where. Listed per
-- tenant (GET /v1/audit); binds and unbinds have their own trail in provisioning.
CREATE TABLE admin_audit (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    actor           text NOT NULL,
    action          text NOT NULL,
    resource_id     text NOT NULL,
    client_address  text
);
CREATE INDEX admin_audit_by_tenant ON admin_audit (tenant_id, id);
