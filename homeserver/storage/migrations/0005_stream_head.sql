-- Stream positions come from a locked counter row instead of a sequence: a sequence hands
-- out a position before its transaction commits, so a reader could see position N while an
-- event at N-1 is still invisible and skip it forever. Updating this row holds its lock until
-- commit, so positions become visible in order and "everything up to pos" is always true.
CREATE TABLE stream_head (pos BIGINT NOT NULL);
INSERT INTO stream_head SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM stream_seq;
DROP SEQUENCE stream_seq;
