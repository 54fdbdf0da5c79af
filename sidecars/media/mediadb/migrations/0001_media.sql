-- Media metadata. origin is '' for media uploaded here and the remote server name for cached
-- remote media. Every query filters by tenant_id.
CREATE TABLE media (
	tenant_id      text        NOT NULL,
	origin         text        NOT NULL,
	media_id       text        NOT NULL,
	user_id        text        NOT NULL DEFAULT '',
	content_type   text        NOT NULL DEFAULT '',
	upload_name    text        NOT NULL DEFAULT '',
	size_bytes     bigint      NOT NULL DEFAULT 0,
	object_key     text        NOT NULL DEFAULT '',
	created_at     timestamptz NOT NULL,
	-- NULL while a /create'd media ID waits for its content.
	uploaded_at    timestamptz,
	pending_until  timestamptz,
	quarantined_at timestamptz,
	PRIMARY KEY (tenant_id, origin, media_id)
);
CREATE INDEX media_user_idx ON media (tenant_id, user_id) WHERE origin = '';
CREATE INDEX media_created_idx ON media (created_at);

CREATE TABLE thumbnails (
	tenant_id    text        NOT NULL,
	origin       text        NOT NULL,
	media_id     text        NOT NULL,
	width        integer     NOT NULL,
	height       integer     NOT NULL,
	method       text        NOT NULL,
	content_type text        NOT NULL,
	size_bytes   bigint      NOT NULL,
	object_key   text        NOT NULL,
	created_at   timestamptz NOT NULL,
	PRIMARY KEY (tenant_id, origin, media_id, width, height, method),
	FOREIGN KEY (tenant_id, origin, media_id) REFERENCES media ON DELETE CASCADE
);
