-- Invites of this tenant's users to rooms on other servers, received through the federation
-- invite API. The room is unknown here until the user joins it, so the invite lives outside
-- the room tables: /sync lists it while no newer membership of the user exists in the room's
-- current state, and a rejection moves it to 'leave' at a new stream position.
CREATE TABLE remote_invites (
	room_id      TEXT NOT NULL,
	user_id      TEXT NOT NULL,
	event_id     TEXT NOT NULL,
	sender       TEXT NOT NULL,
	origin       TEXT NOT NULL,
	room_version TEXT NOT NULL,
	event_json   TEXT NOT NULL,
	invite_state JSONB NOT NULL,
	membership   TEXT NOT NULL,
	leave_event_id TEXT,
	leave_json   TEXT,
	leave_ts     BIGINT,
	stream_pos   BIGINT NOT NULL,
	PRIMARY KEY (room_id, user_id)
);
CREATE INDEX remote_invites_user ON remote_invites (user_id);
