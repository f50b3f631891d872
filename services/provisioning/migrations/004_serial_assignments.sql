-- Serials are assigned, not claimed: the operator (the vendor) assigns each serial to a tenant,
-- and the tenant maps the serials assigned to it to its screens. A row's tenant_id is its
-- assignment; a serial assigned but not mapped yet has no screen. Rows uploaded by a tenant
-- before stay as they are: each counts as assigned to that tenant and mapped to its screen.
ALTER TABLE serials ALTER COLUMN screen_id DROP NOT NULL;
-- A serial with a window open or a device has a screen: enabling needs a mapping first.
ALTER TABLE serials ADD CONSTRAINT serials_enabled_are_mapped
    CHECK (screen_id IS NOT NULL OR (enabled_until IS NULL AND activated_at IS NULL));
