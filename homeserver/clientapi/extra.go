package clientapi

import "net/http"

// routesExtra registers the endpoint families kept in their own files.
func (s *Server) routesExtra(mux *http.ServeMux) {
}
