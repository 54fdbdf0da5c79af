-- Tenants with queued outbound federation traffic, so a shard finds them after a restart
-- without scanning every tenant schema.
CREATE TABLE outbox_tenants (
	tenant_id TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
	since     TIMESTAMPTZ NOT NULL DEFAULT now()
);
