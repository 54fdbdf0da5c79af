package media

import "net/http"

func (s *Server) routes() {
	mux := s.mux
	// Client-Server API, authenticated media (Matrix 1.11+).
	mux.Handle("POST /_matrix/media/v3/upload", s.handle("client.upload", s.upload))
	mux.Handle("POST /_matrix/media/v1/create", s.handle("client.create", s.create))
	mux.Handle("PUT /_matrix/media/v3/upload/{serverName}/{mediaId}", s.handle("client.upload_async", s.uploadAsync))
	mux.Handle("GET /_matrix/client/v1/media/download/{serverName}/{mediaId}", s.handle("client.download", s.download))
	mux.Handle("GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}", s.handle("client.download", s.download))
	mux.Handle("GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}", s.handle("client.thumbnail", s.thumbnail))
	mux.Handle("GET /_matrix/client/v1/media/config", s.handle("client.config", s.mediaConfig))
	mux.Handle("GET /_matrix/media/v3/config", s.handle("client.config", s.mediaConfig))
	mux.Handle("GET /_matrix/client/v1/media/preview_url", s.handle("client.preview_url", s.previewURL))
	mux.Handle("GET /_matrix/media/v3/preview_url", s.handle("client.preview_url", s.previewURL))

	// Legacy unauthenticated endpoints: media from before the cut-off only.
	mux.Handle("GET /_matrix/media/v3/download/{serverName}/{mediaId}", s.handle("legacy.download", s.legacyDownload))
	mux.Handle("GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}", s.handle("legacy.download", s.legacyDownload))
	mux.Handle("GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}", s.handle("legacy.thumbnail", s.legacyThumbnail))

	// Federation API.
	mux.Handle("GET /_matrix/federation/v1/media/download/{mediaId}", s.handle("federation.download", s.federationDownload))
	mux.Handle("GET /_matrix/federation/v1/media/thumbnail/{mediaId}", s.handle("federation.thumbnail", s.federationThumbnail))

	// The sidecar's admin API (admin token).
	mux.Handle("PUT /_atoll/media/v1/tenants/{tenant}", s.handle("admin.create_tenant", s.adminCreateTenant))
	mux.Handle("DELETE /_atoll/media/v1/tenants/{tenant}", s.handle("admin.delete_tenant", s.adminDeleteTenant))
	mux.Handle("POST /_atoll/media/v1/tenants/{tenant}/quarantine/media", s.handle("admin.quarantine_media", s.adminQuarantineMedia))
	mux.Handle("POST /_atoll/media/v1/tenants/{tenant}/quarantine/room", s.handle("admin.quarantine_room", s.adminQuarantineMedia))
	mux.Handle("POST /_atoll/media/v1/tenants/{tenant}/quarantine/user", s.handle("admin.quarantine_user", s.adminQuarantineUser))
	mux.Handle("POST /_atoll/media/v1/tenants/{tenant}/media/delete", s.handle("admin.delete_media", s.adminDeleteMedia))
	mux.Handle("POST /_atoll/media/v1/tenants/{tenant}/purge_remote_cache", s.handle("admin.purge_remote", s.adminPurgeRemote))
	mux.Handle("POST /_atoll/media/v1/retention/run", s.handle("admin.retention", s.adminRetention))

	mux.Handle("OPTIONS /", s.handle("cors", func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	mux.Handle("/", s.handle("unknown", func(w http.ResponseWriter, r *http.Request) error {
		return matrixError(http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request", nil)
	}))
}
