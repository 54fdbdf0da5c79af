-- The tenant schema: everything one homeserver stores. SQL stays unqualified; the caller's
-- transaction sets search_path to the tenant's schema.

-- One sequence orders every persistent stream of the tenant (events, receipts, account data,
-- to-device, device lists), so a /sync token is one number.
CREATE SEQUENCE stream_seq;

CREATE TABLE users (
	localpart     TEXT PRIMARY KEY,
	password_hash TEXT,
	displayname   TEXT,
	avatar_url    TEXT,
	admin         BOOLEAN NOT NULL DEFAULT false,
	deactivated   BOOLEAN NOT NULL DEFAULT false,
	created_ts    BIGINT NOT NULL
);

CREATE TABLE devices (
	user_id      TEXT NOT NULL,
	device_id    TEXT NOT NULL,
	display_name TEXT,
	token_hash   BYTEA UNIQUE,
	last_seen_ts BIGINT,
	last_seen_ip TEXT,
	created_ts   BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);

CREATE TABLE rooms (
	room_id       TEXT PRIMARY KEY,
	room_version  TEXT NOT NULL,
	creator       TEXT NOT NULL,
	published     BOOLEAN NOT NULL DEFAULT false,
	extremities   TEXT[] NOT NULL DEFAULT '{}',
	depth         BIGINT NOT NULL DEFAULT 0,
	state_group   BIGINT,
	created_ts    BIGINT NOT NULL
);

-- A state group is the room state at some point: a delta over its parent. Events point at the
-- group holding the state before them.
CREATE TABLE state_groups (
	id        BIGSERIAL PRIMARY KEY,
	room_id   TEXT NOT NULL,
	parent_id BIGINT REFERENCES state_groups(id),
	chain_len INT NOT NULL,
	delta     JSONB NOT NULL
);

CREATE TABLE events (
	stream_pos       BIGINT PRIMARY KEY,
	event_id         TEXT NOT NULL UNIQUE,
	room_id          TEXT NOT NULL,
	type             TEXT NOT NULL,
	state_key        TEXT,
	sender           TEXT NOT NULL,
	origin_server_ts BIGINT NOT NULL,
	depth            BIGINT NOT NULL,
	json             TEXT NOT NULL,
	state_before     BIGINT REFERENCES state_groups(id),
	redacted_because TEXT,
	relates_to       TEXT,
	rel_type         TEXT,
	txn_device       TEXT,
	txn_id           TEXT
);
CREATE INDEX events_room_pos ON events (room_id, stream_pos);
CREATE INDEX events_relates ON events (relates_to, rel_type) WHERE relates_to IS NOT NULL;
CREATE UNIQUE INDEX events_txn ON events (sender, txn_device, txn_id) WHERE txn_id IS NOT NULL;

CREATE TABLE current_state (
	room_id    TEXT NOT NULL,
	type       TEXT NOT NULL,
	state_key  TEXT NOT NULL,
	event_id   TEXT NOT NULL,
	membership TEXT,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_member ON current_state (state_key, membership) WHERE type = 'm.room.member';

-- Every membership change of local users, for /sync's per-user view of rooms over time.
CREATE TABLE memberships (
	stream_pos BIGINT PRIMARY KEY,
	room_id    TEXT NOT NULL,
	user_id    TEXT NOT NULL,
	membership TEXT NOT NULL,
	event_id   TEXT NOT NULL
);
CREATE INDEX memberships_user ON memberships (user_id, stream_pos);

CREATE TABLE room_aliases (
	alias   TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

CREATE TABLE forgotten_rooms (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	PRIMARY KEY (user_id, room_id)
);

CREATE TABLE account_data (
	user_id    TEXT NOT NULL,
	room_id    TEXT NOT NULL DEFAULT '',
	type       TEXT NOT NULL,
	content    JSONB NOT NULL,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_pos ON account_data (user_id, stream_pos);

CREATE TABLE receipts (
	room_id      TEXT NOT NULL,
	receipt_type TEXT NOT NULL,
	user_id      TEXT NOT NULL,
	thread_id    TEXT NOT NULL DEFAULT '',
	event_id     TEXT NOT NULL,
	ts           BIGINT NOT NULL,
	stream_pos   BIGINT NOT NULL,
	PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_pos ON receipts (room_id, stream_pos);

CREATE TABLE to_device (
	stream_pos BIGINT PRIMARY KEY,
	user_id    TEXT NOT NULL,
	device_id  TEXT NOT NULL,
	sender     TEXT NOT NULL,
	type       TEXT NOT NULL,
	content    JSONB NOT NULL
);
CREATE INDEX to_device_target ON to_device (user_id, device_id, stream_pos);

CREATE TABLE device_keys (
	user_id    TEXT NOT NULL,
	device_id  TEXT NOT NULL,
	key_json   JSONB NOT NULL,
	PRIMARY KEY (user_id, device_id)
);

CREATE TABLE one_time_keys (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	key_id    TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_json  JSONB NOT NULL,
	PRIMARY KEY (user_id, device_id, key_id)
);

CREATE TABLE fallback_keys (
	user_id   TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id    TEXT NOT NULL,
	key_json  JSONB NOT NULL,
	used      BOOLEAN NOT NULL DEFAULT false,
	PRIMARY KEY (user_id, device_id, algorithm)
);

CREATE TABLE cross_signing_keys (
	user_id  TEXT NOT NULL,
	key_type TEXT NOT NULL,
	key_json JSONB NOT NULL,
	PRIMARY KEY (user_id, key_type)
);

-- A row per user whose device list or cross-signing keys changed, for keys/changes and sync.
CREATE TABLE device_list_changes (
	stream_pos BIGINT PRIMARY KEY,
	user_id    TEXT NOT NULL
);
CREATE INDEX device_list_changes_user ON device_list_changes (user_id);

CREATE TABLE key_backup_versions (
	user_id   TEXT NOT NULL,
	version   BIGSERIAL,
	algorithm TEXT NOT NULL,
	auth_data JSONB NOT NULL,
	etag      BIGINT NOT NULL DEFAULT 0,
	deleted   BOOLEAN NOT NULL DEFAULT false,
	PRIMARY KEY (user_id, version)
);

CREATE TABLE key_backup_keys (
	user_id    TEXT NOT NULL,
	version    BIGINT NOT NULL,
	room_id    TEXT NOT NULL,
	session_id TEXT NOT NULL,
	data       JSONB NOT NULL,
	PRIMARY KEY (user_id, version, room_id, session_id)
);

CREATE TABLE filters (
	user_id   TEXT NOT NULL,
	filter_id BIGSERIAL,
	filter    JSONB NOT NULL,
	PRIMARY KEY (user_id, filter_id)
);

-- Rules a user added; the spec's defaults live in code, with only their overrides stored.
CREATE TABLE push_rules (
	user_id  TEXT NOT NULL,
	kind     TEXT NOT NULL,
	rule_id  TEXT NOT NULL,
	rule     JSONB NOT NULL,
	position DOUBLE PRECISION NOT NULL,
	PRIMARY KEY (user_id, kind, rule_id)
);

CREATE TABLE push_rule_overrides (
	user_id TEXT NOT NULL,
	kind    TEXT NOT NULL,
	rule_id TEXT NOT NULL,
	enabled BOOLEAN,
	actions JSONB,
	PRIMARY KEY (user_id, kind, rule_id)
);

CREATE TABLE pushers (
	user_id             TEXT NOT NULL,
	app_id              TEXT NOT NULL,
	pushkey             TEXT NOT NULL,
	kind                TEXT NOT NULL,
	app_display_name    TEXT NOT NULL,
	device_display_name TEXT NOT NULL,
	profile_tag         TEXT,
	lang                TEXT NOT NULL,
	data                JSONB NOT NULL,
	device_id           TEXT,
	created_ts          BIGINT NOT NULL,
	PRIMARY KEY (user_id, app_id, pushkey)
);

CREATE TABLE event_push_actions (
	user_id    TEXT NOT NULL,
	room_id    TEXT NOT NULL,
	event_id   TEXT NOT NULL,
	stream_pos BIGINT NOT NULL,
	thread_id  TEXT NOT NULL DEFAULT 'main',
	notify     BOOLEAN NOT NULL,
	highlight  BOOLEAN NOT NULL,
	actions    JSONB NOT NULL,
	PRIMARY KEY (user_id, event_id)
);
CREATE INDEX event_push_actions_room ON event_push_actions (user_id, room_id, stream_pos);

CREATE TABLE registration_tokens (
	token        TEXT PRIMARY KEY,
	uses_allowed INT,
	completed    INT NOT NULL DEFAULT 0,
	expiry_ts    BIGINT
);

CREATE TABLE reports (
	id       BIGSERIAL PRIMARY KEY,
	room_id  TEXT NOT NULL,
	event_id TEXT,
	user_id  TEXT NOT NULL,
	reason   TEXT,
	score    INT,
	ts       BIGINT NOT NULL
);
