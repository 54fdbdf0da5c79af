package federation

import "net/http"

// routes lists every federation endpoint.
func (s *Server) routes(mux *http.ServeMux) {
	s.handle(mux, "GET /_matrix/federation/v1/version", "federation.version", s.version)
	s.handle(mux, "GET /_matrix/key/v2/server", "key.server", s.serverKeys)
	s.handle(mux, "GET /_matrix/key/v2/server/{keyID}", "key.server", s.serverKeys)
	s.handle(mux, "POST /_matrix/key/v2/query", "key.query", s.notary)
	s.handle(mux, "GET /_matrix/key/v2/query/{serverName}", "key.query", s.notary)
	s.authed(mux, "GET /_matrix/federation/v1/query/profile", "federation.query_profile", s.queryProfile)
	s.authed(mux, "GET /_matrix/federation/v1/query/directory", "federation.query_directory", s.queryDirectory)
	s.authed(mux, "PUT /_matrix/federation/v1/send/{txnID}", "federation.send", s.send)
	s.authed(mux, "GET /_matrix/federation/v1/make_join/{roomID}/{userID}", "federation.make_join", s.makeJoin)
	s.authed(mux, "PUT /_matrix/federation/v2/send_join/{roomID}/{eventID}", "federation.send_join", s.sendJoin)
	s.authed(mux, "GET /_matrix/federation/v1/make_leave/{roomID}/{userID}", "federation.make_leave", s.makeLeave)
	s.authed(mux, "PUT /_matrix/federation/v2/send_leave/{roomID}/{eventID}", "federation.send_leave", s.sendLeave)
	s.authed(mux, "PUT /_matrix/federation/v2/invite/{roomID}/{eventID}", "federation.invite", s.invite)
	s.authed(mux, "GET /_matrix/federation/v1/make_knock/{roomID}/{userID}", "federation.make_knock", s.makeKnock)
	s.authed(mux, "PUT /_matrix/federation/v1/send_knock/{roomID}/{eventID}", "federation.send_knock", s.sendKnock)
	s.authed(mux, "GET /_matrix/federation/v1/hierarchy/{roomID}", "federation.hierarchy", s.hierarchy)
	s.authed(mux, "GET /_matrix/federation/v1/publicRooms", "federation.public_rooms", s.publicRooms)
	s.authed(mux, "POST /_matrix/federation/v1/publicRooms", "federation.public_rooms", s.publicRooms)
	s.authed(mux, "GET /_matrix/federation/v1/timestamp_to_event/{roomID}", "federation.timestamp_to_event", s.timestampToEvent)
	s.authed(mux, "GET /_matrix/federation/v1/event/{eventID}", "federation.event", s.getEvent)
	s.authed(mux, "GET /_matrix/federation/v1/state/{roomID}", "federation.state", s.roomState(false))
	s.authed(mux, "GET /_matrix/federation/v1/state_ids/{roomID}", "federation.state_ids", s.roomState(true))
	s.authed(mux, "GET /_matrix/federation/v1/event_auth/{roomID}/{eventID}", "federation.event_auth", s.eventAuth)
	s.authed(mux, "POST /_matrix/federation/v1/get_missing_events/{roomID}", "federation.get_missing_events", s.missingEvents)
	s.authed(mux, "GET /_matrix/federation/v1/backfill/{roomID}", "federation.backfill", s.backfill)
	s.authed(mux, "POST /_matrix/federation/v1/user/keys/query", "federation.user_keys_query", s.userKeysQuery)
	s.authed(mux, "POST /_matrix/federation/v1/user/keys/claim", "federation.user_keys_claim", s.userKeysClaim)
	s.authed(mux, "GET /_matrix/federation/v1/user/devices/{userID}", "federation.user_devices", s.userDevices)
}
