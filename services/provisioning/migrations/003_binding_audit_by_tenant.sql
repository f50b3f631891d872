-- GET /v1/devices/audit lists a tenant's whole binding trail, newest first.
CREATE INDEX binding_audit_by_tenant ON binding_audit (tenant_id, id);
