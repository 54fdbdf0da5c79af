-- Public keys of other Matrix servers, cached for every tenant of the installation: keys are
-- public and the same whichever tenant fetched them.
CREATE TABLE server_keys (
	server_name    TEXT NOT NULL,
	key_id         TEXT NOT NULL,
	public_key     BYTEA NOT NULL,
	valid_until_ts BIGINT NOT NULL,
	expired_ts     BIGINT NOT NULL DEFAULT 0,
	fetched_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
	PRIMARY KEY (server_name, key_id)
);
