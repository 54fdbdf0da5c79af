package adminapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// MediaBuckets asks the media sidecar to create or delete a tenant's storage, so that a
// tenant's bucket lives exactly as long as the tenant.
type MediaBuckets struct {
	base  string
	token string
	http  *http.Client
}

// NewMediaBuckets returns a client of the media sidecar's admin API at base, or nil when base
// is empty (no sidecar).
func NewMediaBuckets(base, token string) *MediaBuckets {
	if base == "" {
		return nil
	}
	return &MediaBuckets{base: base, token: token, http: &http.Client{Timeout: 5 * time.Minute}}
}

func (m *MediaBuckets) call(ctx context.Context, method, tenantID string) error {
	req, err := http.NewRequestWithContext(ctx, method, m.base+"/_atoll/media/v1/tenants/"+url.PathEscape(tenantID), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+m.token)
	resp, err := m.http.Do(req)
	if err != nil {
		return fmt.Errorf("media sidecar: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("media sidecar: %s %s: %s: %s", method, tenantID, resp.Status, b)
	}
	return nil
}

// Create makes the tenant's bucket (or prefix).
func (m *MediaBuckets) Create(ctx context.Context, tenantID string) error {
	return m.call(ctx, http.MethodPut, tenantID)
}

// Delete removes every object of the tenant and then its bucket.
func (m *MediaBuckets) Delete(ctx context.Context, tenantID string) error {
	return m.call(ctx, http.MethodDelete, tenantID)
}
