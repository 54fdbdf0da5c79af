-- Push delivery state per pusher, so a restarted worker neither resends nor skips: the stream
-- position of the newest notification delivered (or given up on) and the failure streak that
-- drives backoff.
ALTER TABLE pushers ADD COLUMN last_stream_pos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pushers ADD COLUMN failures INT NOT NULL DEFAULT 0;
ALTER TABLE pushers ADD COLUMN next_attempt_ts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pushers ADD COLUMN last_success_ts BIGINT;

CREATE INDEX event_push_actions_user_pos ON event_push_actions (user_id, stream_pos);
