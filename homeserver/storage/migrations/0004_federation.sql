-- Federation: events received from other servers, the state after every event (forks need
-- it), and the durable outbound queue.
ALTER TABLE events ADD COLUMN state_after BIGINT REFERENCES state_groups(id);
ALTER TABLE events ADD COLUMN outlier BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE events ADD COLUMN soft_failed BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE events ADD COLUMN origin TEXT;

-- The state after an event is the state before it for a non-state event.
UPDATE events SET state_after = state_before WHERE state_key IS NULL;

-- PDUs and EDUs waiting for a destination; delivered in id order, deleted once acknowledged.
CREATE TABLE federation_outbox (
	id          BIGSERIAL PRIMARY KEY,
	destination TEXT NOT NULL,
	kind        TEXT NOT NULL CHECK (kind IN ('pdu', 'edu')),
	payload     JSONB NOT NULL,
	created_ts  BIGINT NOT NULL
);
CREATE INDEX federation_outbox_destination ON federation_outbox (destination, id);

CREATE TABLE federation_destinations (
	destination TEXT PRIMARY KEY,
	failures    INT NOT NULL DEFAULT 0,
	retry_at    BIGINT NOT NULL DEFAULT 0,
	last_error  TEXT
);

-- Transactions already processed from each origin, so a retried /send is not applied twice.
CREATE TABLE federation_inbound_txns (
	origin     TEXT NOT NULL,
	txn_id     TEXT NOT NULL,
	received_ts BIGINT NOT NULL,
	PRIMARY KEY (origin, txn_id)
);

-- A join through another server brings many memberships at one stream position.
ALTER TABLE memberships DROP CONSTRAINT memberships_pkey;
ALTER TABLE memberships ADD PRIMARY KEY (stream_pos, room_id, user_id);
