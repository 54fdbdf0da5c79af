-- End-to-end encryption additions: signatures uploaded over keys (cross-signing) and the
-- transaction IDs of sendToDevice requests already handled.

-- A signature by signer_user_id's key signer_key_id (e.g. "ed25519:<device or public key>")
-- over target_user_id's key target_key_id (a device ID or a cross-signing public key).
CREATE TABLE key_signatures (
	target_user_id TEXT NOT NULL,
	target_key_id  TEXT NOT NULL,
	signer_user_id TEXT NOT NULL,
	signer_key_id  TEXT NOT NULL,
	signature      TEXT NOT NULL,
	PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

CREATE TABLE to_device_txns (
	user_id    TEXT NOT NULL,
	device_id  TEXT NOT NULL,
	txn_id     TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id, txn_id)
);
