-- The control schema: which tenants exist, their identity and settings, and which shard
-- holds each tenant's lease.
CREATE TABLE tenants (
	id             TEXT PRIMARY KEY,
	server_name    TEXT NOT NULL UNIQUE,
	client_host    TEXT UNIQUE,
	status         TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
	settings       JSONB NOT NULL,
	key_id         TEXT NOT NULL,
	signing_seed   BYTEA NOT NULL,
	owner_shard    TEXT,
	lease_until    TIMESTAMPTZ,
	fencing_token  BIGINT NOT NULL DEFAULT 0,
	created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
	suspended_at   TIMESTAMPTZ
);

CREATE TABLE shards (
	name          TEXT PRIMARY KEY,
	advertise_url TEXT NOT NULL,
	heartbeat     TIMESTAMPTZ NOT NULL DEFAULT now()
);
