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
}
