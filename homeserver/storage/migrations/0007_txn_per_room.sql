-- A client's transaction ID names one request to one room: the same ID sent to two rooms is two
-- messages.
DROP INDEX events_txn;
CREATE UNIQUE INDEX events_txn ON events (room_id, sender, txn_device, txn_id) WHERE txn_id IS NOT NULL;
