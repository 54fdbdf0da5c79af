package clientapi

import "net/http"

// routes lists every endpoint of the Client-Server API with its metric name.
func (s *Server) routes(mux *http.ServeMux) {
	s.handle(mux, "GET /_matrix/client/versions", "client.versions", s.versions)
	s.public(mux, "GET /.well-known/matrix/client", "wellknown.client", s.wellKnownClient)
	s.public(mux, "GET /.well-known/matrix/server", "wellknown.server", s.wellKnownServer)
	s.authed(mux, "GET /_matrix/client/v3/capabilities", "client.capabilities", s.capabilities)

	// Accounts.
	s.public(mux, "POST /_matrix/client/v3/register", "client.register", s.register)
	s.public(mux, "GET /_matrix/client/v3/register/available", "client.register_available", s.registerAvailable)
	s.public(mux, "GET /_matrix/client/v1/register/m.login.registration_token/validity", "client.registration_token", s.registrationTokenValidity)
	s.public(mux, "GET /_synapse/admin/v1/register", "admin.register_nonce", s.adminRegisterNonce)
	s.public(mux, "POST /_synapse/admin/v1/register", "admin.register", s.adminRegister)
	s.public(mux, "GET /_matrix/client/v3/login", "client.login_flows", s.loginFlows)
	s.public(mux, "POST /_matrix/client/v3/login", "client.login", s.login)
	s.authed(mux, "POST /_matrix/client/v3/logout", "client.logout", s.logout)
	s.authed(mux, "POST /_matrix/client/v3/logout/all", "client.logout_all", s.logoutAll)
	s.authed(mux, "GET /_matrix/client/v3/account/whoami", "client.whoami", s.whoami)
	s.authed(mux, "POST /_matrix/client/v3/account/password", "client.password", s.changePassword)
	s.authed(mux, "POST /_matrix/client/v3/account/deactivate", "client.deactivate", s.deactivate)

	// Profile.
	s.public(mux, "GET /_matrix/client/v3/profile/{userID}", "client.profile", s.profile(""))
	s.public(mux, "GET /_matrix/client/v3/profile/{userID}/displayname", "client.profile", s.profile("displayname"))
	s.public(mux, "GET /_matrix/client/v3/profile/{userID}/avatar_url", "client.profile", s.profile("avatar_url"))
	s.authed(mux, "PUT /_matrix/client/v3/profile/{userID}/displayname", "client.profile_set", s.setProfile("displayname"))
	s.authed(mux, "PUT /_matrix/client/v3/profile/{userID}/avatar_url", "client.profile_set", s.setProfile("avatar_url"))

	// Rooms.
	s.authed(mux, "POST /_matrix/client/v3/createRoom", "client.create_room", s.createRoom)
	s.authed(mux, "POST /_matrix/client/v3/join/{roomIDOrAlias}", "client.join", s.joinRoom)
	s.authed(mux, "POST /_matrix/client/v3/rooms/{roomID}/join", "client.join", s.joinRoom)
	s.authed(mux, "POST /_matrix/client/v3/knock/{roomIDOrAlias}", "client.knock", s.knockRoom)
	s.authed(mux, "GET /_matrix/client/v1/rooms/{roomID}/hierarchy", "client.hierarchy", s.roomHierarchy)
	s.authed(mux, "GET /_matrix/client/v1/rooms/{roomID}/timestamp_to_event", "client.timestamp_to_event", s.timestampToEvent)
	s.authed(mux, "POST /_matrix/client/v3/rooms/{roomID}/invite", "client.membership", s.membershipChange("invite"))
	s.authed(mux, "POST /_matrix/client/v3/rooms/{roomID}/leave", "client.membership", s.membershipChange("leave"))
	s.authed(mux, "POST /_matrix/client/v3/rooms/{roomID}/kick", "client.membership", s.membershipChange("leave"))
	s.authed(mux, "POST /_matrix/client/v3/rooms/{roomID}/ban", "client.membership", s.membershipChange("ban"))
	s.authed(mux, "POST /_matrix/client/v3/rooms/{roomID}/unban", "client.membership", s.membershipChange("leave"))
	s.authed(mux, "POST /_matrix/client/v3/rooms/{roomID}/forget", "client.forget", s.forgetRoom)
	s.authed(mux, "GET /_matrix/client/v3/rooms/{roomID}/state", "client.room_state", s.roomState)
	s.authed(mux, "GET /_matrix/client/v3/rooms/{roomID}/state/{eventType}", "client.room_state", s.roomStateEvent)
	s.authed(mux, "GET /_matrix/client/v3/rooms/{roomID}/state/{eventType}/{stateKey...}", "client.room_state", s.roomStateEvent)
	s.authed(mux, "PUT /_matrix/client/v3/rooms/{roomID}/state/{eventType}", "client.put_state", s.putState)
	s.authed(mux, "PUT /_matrix/client/v3/rooms/{roomID}/state/{eventType}/{stateKey...}", "client.put_state", s.putState)
	s.authed(mux, "PUT /_matrix/client/v3/rooms/{roomID}/send/{eventType}/{txnID}", "client.send", s.sendMessage)
	s.authed(mux, "PUT /_matrix/client/v3/rooms/{roomID}/redact/{eventID}/{txnID}", "client.redact", s.redact)
	s.authed(mux, "GET /_matrix/client/v3/joined_rooms", "client.joined_rooms", s.joinedRooms)
	s.authed(mux, "GET /_matrix/client/v3/rooms/{roomID}/members", "client.members", s.members)
	s.authed(mux, "GET /_matrix/client/v3/rooms/{roomID}/joined_members", "client.joined_members", s.joinedMembers)
	s.authed(mux, "GET /_matrix/client/v3/rooms/{roomID}/event/{eventID}", "client.event", s.getEvent)
	s.authed(mux, "GET /_matrix/client/v3/rooms/{roomID}/context/{eventID}", "client.context", s.eventContext)
	s.authed(mux, "GET /_matrix/client/v3/rooms/{roomID}/messages", "client.messages", s.messages)
	s.authed(mux, "POST /_matrix/client/v3/rooms/{roomID}/upgrade", "client.upgrade", s.upgradeRoom)
	s.authed(mux, "GET /_matrix/client/v3/rooms/{roomID}/aliases", "client.aliases", s.roomAliases)
	s.authed(mux, "PUT /_matrix/client/v3/directory/room/{alias}", "client.alias_put", s.putAlias)
	s.public(mux, "GET /_matrix/client/v3/directory/room/{alias}", "client.alias_get", s.getAlias)
	s.authed(mux, "DELETE /_matrix/client/v3/directory/room/{alias}", "client.alias_delete", s.deleteAlias)
	s.public(mux, "GET /_matrix/client/v3/directory/list/room/{roomID}", "client.visibility", s.getVisibility)
	s.authed(mux, "PUT /_matrix/client/v3/directory/list/room/{roomID}", "client.visibility_put", s.putVisibility)
	s.public(mux, "GET /_matrix/client/v3/publicRooms", "client.public_rooms", s.publicRooms)
	s.authed(mux, "POST /_matrix/client/v3/publicRooms", "client.public_rooms", func(w http.ResponseWriter, r *http.Request, sess *Session) error {
		return s.publicRooms(w, r, sess.T)
	})

	// Sync and ephemeral data.
	s.authed(mux, "GET /_matrix/client/v3/sync", "client.sync", s.sync)
	s.authed(mux, "POST /_matrix/client/v3/user/{userID}/filter", "client.filter", s.postFilter)
	s.authed(mux, "GET /_matrix/client/v3/user/{userID}/filter/{filterID}", "client.filter", s.getFilter)
	s.authed(mux, "PUT /_matrix/client/v3/rooms/{roomID}/typing/{userID}", "client.typing", s.putTyping)
	s.authed(mux, "GET /_matrix/client/v3/presence/{userID}/status", "client.presence", s.getPresence)
	s.authed(mux, "PUT /_matrix/client/v3/presence/{userID}/status", presenceRoute, s.putPresence)
	s.authed(mux, "POST /_matrix/client/v3/rooms/{roomID}/receipt/{receiptType}/{eventID}", "client.receipt", s.postReceipt)
	s.authed(mux, "POST /_matrix/client/v3/rooms/{roomID}/read_markers", "client.read_markers", s.readMarkers)
	s.authed(mux, "GET /_matrix/client/v3/user/{userID}/account_data/{type}", "client.account_data", s.accountData(false, false))
	s.authed(mux, "PUT /_matrix/client/v3/user/{userID}/account_data/{type}", "client.account_data", s.accountData(true, false))
	s.authed(mux, "GET /_matrix/client/v3/user/{userID}/rooms/{roomID}/account_data/{type}", "client.account_data", s.accountData(false, true))
	s.authed(mux, "PUT /_matrix/client/v3/user/{userID}/rooms/{roomID}/account_data/{type}", "client.account_data", s.accountData(true, true))

	// Areas in their own files register here.
	s.routesExtra(mux)
}
