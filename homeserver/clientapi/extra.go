package clientapi

import "net/http"

// routesExtra registers the endpoint families kept in their own files.
func (s *Server) routesExtra(mux *http.ServeMux) {
	// Push rules, pushers and notifications (pushrules.go, pushers.go).
	s.authed(mux, "GET /_matrix/client/v3/pushrules/{$}", "client.push_rules", s.getPushRules)
	s.authed(mux, "GET /_matrix/client/v3/pushrules/{scope}/{$}", "client.push_rules", s.getPushRules)
	s.authed(mux, "GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleID}", "client.push_rule", s.getPushRule)
	s.authed(mux, "PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleID}", "client.push_rule_put", s.putPushRule)
	s.authed(mux, "DELETE /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleID}", "client.push_rule_delete", s.deletePushRule)
	s.authed(mux, "GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleID}/enabled", "client.push_rule_enabled", s.pushRuleAttr("enabled", false))
	s.authed(mux, "PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleID}/enabled", "client.push_rule_enabled", s.pushRuleAttr("enabled", true))
	s.authed(mux, "GET /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleID}/actions", "client.push_rule_actions", s.pushRuleAttr("actions", false))
	s.authed(mux, "PUT /_matrix/client/v3/pushrules/{scope}/{kind}/{ruleID}/actions", "client.push_rule_actions", s.pushRuleAttr("actions", true))
	s.authed(mux, "GET /_matrix/client/v3/pushers", "client.pushers", s.getPushers)
	s.authed(mux, "POST /_matrix/client/v3/pushers/set", "client.pushers_set", s.setPusher)
	s.authed(mux, "GET /_matrix/client/v3/notifications", "client.notifications", s.getNotifications)
	// User directory, relations, threads, reports and tags (social.go).
	s.authed(mux, "POST /_matrix/client/v3/user_directory/search", "client.user_directory", s.searchUsers)
	s.authed(mux, "GET /_matrix/client/v1/rooms/{roomID}/relations/{eventID}", "client.relations", s.relations)
	s.authed(mux, "GET /_matrix/client/v1/rooms/{roomID}/relations/{eventID}/{relType}", "client.relations", s.relations)
	s.authed(mux, "GET /_matrix/client/v1/rooms/{roomID}/relations/{eventID}/{relType}/{eventType}", "client.relations", s.relations)
	s.authed(mux, "GET /_matrix/client/v1/rooms/{roomID}/threads", "client.threads", s.threads)
	s.authed(mux, "POST /_matrix/client/v3/rooms/{roomID}/report/{eventID}", "client.report", s.report)
	s.authed(mux, "POST /_matrix/client/v3/rooms/{roomID}/report", "client.report", s.report)
	s.authed(mux, "GET /_matrix/client/v3/user/{userID}/rooms/{roomID}/tags", "client.tags", s.tags)
	s.authed(mux, "PUT /_matrix/client/v3/user/{userID}/rooms/{roomID}/tags/{tag}", "client.tags", s.tags)
	s.authed(mux, "DELETE /_matrix/client/v3/user/{userID}/rooms/{roomID}/tags/{tag}", "client.tags", s.tags)
	// End-to-end encryption: keys, cross-signing, to-device, devices, key backup.
	s.authed(mux, "POST /_matrix/client/v3/keys/upload", "client.keys_upload", noNUL(s.uploadKeys))
	s.authed(mux, "POST /_matrix/client/v3/keys/query", "client.keys_query", noNUL(s.queryKeys))
	s.authed(mux, "POST /_matrix/client/v3/keys/claim", "client.keys_claim", noNUL(s.claimKeys))
	s.authed(mux, "GET /_matrix/client/v3/keys/changes", "client.keys_changes", noNUL(s.keyChanges))
	s.authed(mux, "POST /_matrix/client/v3/keys/device_signing/upload", "client.keys_device_signing", noNUL(s.uploadCrossSigningKeys))
	s.authed(mux, "POST /_matrix/client/v3/keys/signatures/upload", "client.keys_signatures", noNUL(s.uploadSignatures))
	s.authed(mux, "PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnID}", "client.send_to_device", noNUL(s.sendToDevice))
	s.authed(mux, "GET /_matrix/client/v3/devices", "client.devices", noNUL(s.listDevices))
	s.authed(mux, "GET /_matrix/client/v3/devices/{deviceID}", "client.device", noNUL(s.getDevice))
	s.authed(mux, "PUT /_matrix/client/v3/devices/{deviceID}", "client.device_update", noNUL(s.updateDevice))
	s.authed(mux, "DELETE /_matrix/client/v3/devices/{deviceID}", "client.device_delete", noNUL(s.deleteDevice))
	s.authed(mux, "POST /_matrix/client/v3/delete_devices", "client.delete_devices", noNUL(s.deleteDevices))
	s.authed(mux, "POST /_matrix/client/v3/room_keys/version", "client.room_keys_version", noNUL(s.createBackupVersion))
	s.authed(mux, "GET /_matrix/client/v3/room_keys/version", "client.room_keys_version", noNUL(s.getBackupVersion))
	s.authed(mux, "GET /_matrix/client/v3/room_keys/version/{version}", "client.room_keys_version", noNUL(s.getBackupVersion))
	s.authed(mux, "PUT /_matrix/client/v3/room_keys/version/{version}", "client.room_keys_version", noNUL(s.updateBackupVersion))
	s.authed(mux, "DELETE /_matrix/client/v3/room_keys/version/{version}", "client.room_keys_version", noNUL(s.deleteBackupVersion))
	for _, p := range []string{"/_matrix/client/v3/room_keys/keys", "/_matrix/client/v3/room_keys/keys/{roomID}", "/_matrix/client/v3/room_keys/keys/{roomID}/{sessionID}"} {
		s.authed(mux, "GET "+p, "client.room_keys", noNUL(s.getBackupKeys))
		s.authed(mux, "PUT "+p, "client.room_keys", noNUL(s.putBackupKeys))
		s.authed(mux, "DELETE "+p, "client.room_keys", noNUL(s.deleteBackupKeys))
	}
}
