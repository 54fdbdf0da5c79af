package media_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/sidecars/media/config"
)

func TestUploadDownload(t *testing.T) {
	e := newEnv(t)
	server, id := e.upload(hostA, aliceToken, "text/plain; charset=utf-8", "hello media")
	if server != hostA || len(id) != 32 {
		t.Fatalf("content uri server %q id %q", server, id)
	}
	for _, tc := range []struct {
		name, path      string
		wantDisposition string
	}{
		{"stored name", "/_matrix/client/v1/media/download/a.example/" + id, `inline; filename="f.bin"`},
		{"requested name", "/_matrix/client/v1/media/download/a.example/" + id + "/caf%C3%A9.txt", `inline; filename="caf_.txt"; filename*=utf-8''caf%C3%A9.txt`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, h := e.do(http.MethodGet, hostA, tc.path, aliceToken, "", nil)
			if status != http.StatusOK || string(body) != "hello media" {
				t.Fatalf("download: %d %q", status, body)
			}
			for k, want := range map[string]string{
				"Content-Type":            "text/plain; charset=utf-8",
				"Content-Disposition":     tc.wantDisposition,
				"X-Content-Type-Options":  "nosniff",
				"Content-Security-Policy": "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';",
				"Accept-Ranges":           "bytes",
			} {
				if got := h.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
	// Unsafe types are attachments.
	_, htmlID := e.upload(hostA, aliceToken, "text/html", "<script>alert(1)</script>")
	_, _, h := e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/download/a.example/"+htmlID, aliceToken, "", nil)
	if got := h.Get("Content-Disposition"); !strings.HasPrefix(got, "attachment") {
		t.Fatalf("text/html served with Content-Disposition %q", got)
	}
	status, body, _ := e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/config", aliceToken, "", nil)
	if status != http.StatusOK || !strings.Contains(string(body), fmt.Sprintf(`"m.upload.size":%d`, e.cfg.MaxUploadBytes)) {
		t.Fatalf("config: %d %s", status, body)
	}
	if got := e.counter("atoll_media_received_bytes_total"); got < float64(len("hello media")) {
		t.Fatalf("atoll_media_received_bytes_total = %v", got)
	}
}

func TestRangeRequests(t *testing.T) {
	e := newEnv(t)
	content := strings.Repeat("0123456789", 100)
	_, id := e.upload(hostA, aliceToken, "application/octet-stream", content)
	path := "/_matrix/client/v1/media/download/a.example/" + id
	for _, tc := range []struct {
		rng        string
		wantStatus int
		wantBody   string
	}{
		{"bytes=10-19", http.StatusPartialContent, content[10:20]},
		{"bytes=995-", http.StatusPartialContent, content[995:]},
		{"bytes=-3", http.StatusPartialContent, content[997:]},
		{"bytes=2000-3000", http.StatusRequestedRangeNotSatisfiable, ""},
		{"", http.StatusOK, content},
	} {
		t.Run(tc.rng, func(t *testing.T) {
			hdr := map[string]string{}
			if tc.rng != "" {
				hdr["Range"] = tc.rng
			}
			status, body, _ := e.do(http.MethodGet, hostA, path, aliceToken, "", hdr)
			if status != tc.wantStatus || (tc.wantBody != "" && string(body) != tc.wantBody) {
				t.Fatalf("Range %q: %d %q", tc.rng, status, body)
			}
		})
	}
}

func TestAuthErrors(t *testing.T) {
	e := newEnv(t)
	_, id := e.upload(hostA, aliceToken, "text/plain", "x")
	path := "/_matrix/client/v1/media/download/a.example/" + id
	for _, tc := range []struct {
		name, host, token string
		wantStatus        int
		wantCode          string
	}{
		{"missing token", hostA, "", 401, "M_MISSING_TOKEN"},
		{"unknown token", hostA, "nope", 401, "M_UNKNOWN_TOKEN"},
		{"token of another tenant", hostA, bobToken, 401, "M_UNKNOWN_TOKEN"},
		{"unknown host", "c.example", aliceToken, 404, "M_NOT_FOUND"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := e.do(http.MethodGet, tc.host, path, tc.token, "", nil)
			wantError(t, status, body, tc.wantStatus, tc.wantCode)
		})
	}
	// access_token in the query works too.
	status, _, _ := e.do(http.MethodGet, hostA, path+"?access_token="+aliceToken, "", "", nil)
	if status != http.StatusOK {
		t.Fatalf("access_token query: %d", status)
	}
}

func TestTenantIsolation(t *testing.T) {
	e := newEnv(t)
	_, idA := e.upload(hostA, aliceToken, "text/plain", "secret of a")
	// Bob (tenant B) names A's media ID under his own server: no such media in tenant B.
	status, body, _ := e.do(http.MethodGet, hostB, "/_matrix/client/v1/media/download/b.example/"+idA, bobToken, "", nil)
	wantError(t, status, body, 404, "M_NOT_FOUND")
	status, body, _ = e.do(http.MethodGet, hostB, "/_matrix/client/v1/media/thumbnail/b.example/"+idA+"?width=32&height=32", bobToken, "", nil)
	wantError(t, status, body, 404, "M_NOT_FOUND")
	// Federation requests on B's host cannot reach A's media either.
	status, body, _ = e.do(http.MethodGet, hostB, "/_matrix/federation/v1/media/download/"+idA, "", "", map[string]string{"Authorization": federationAuth})
	wantError(t, status, body, 404, "M_NOT_FOUND")
	if e.rowCount(tenantB, false) != 0 || len(e.objects(tenantB)) != 0 {
		t.Fatalf("tenant B holds rows or objects: %d %v", e.rowCount(tenantB, false), e.objects(tenantB))
	}
	if keys := e.objects(tenantA); len(keys) != 1 || keys[0] != "local/"+idA {
		t.Fatalf("tenant A objects = %v", keys)
	}
	// Deleting tenant B leaves A alone.
	status, body, _ = e.do(http.MethodDelete, hostA, "/_atoll/media/v1/tenants/"+tenantB, e.hs.AdminToken, "", nil)
	if status != http.StatusOK {
		t.Fatalf("delete tenant B: %d %s", status, body)
	}
	status, _, _ = e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/download/a.example/"+idA, aliceToken, "", nil)
	if status != http.StatusOK {
		t.Fatalf("A's media after deleting B: %d", status)
	}
}

func encodeImage(t testing.TB, format string, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 200, 255})
		}
	}
	var buf bytes.Buffer
	var err error
	switch format {
	case "jpeg":
		err = jpeg.Encode(&buf, img, nil)
	case "png":
		err = png.Encode(&buf, img)
	case "gif":
		err = gif.Encode(&buf, img, nil)
	case "webp":
		var b []byte
		b, err = os.ReadFile("thumbnail/testdata/video-001.lossy.webp") // 150x103
		buf.Write(b)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestThumbnails(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		format   string
		w, h     int
		wantType string
	}{
		{"jpeg", 1000, 800, "image/jpeg"},
		{"png", 1000, 800, "image/png"},
		{"gif", 1000, 800, "image/png"},
		{"webp", 150, 103, "image/png"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			_, id := e.upload(hostA, aliceToken, "image/"+tc.format, string(encodeImage(t, tc.format, tc.w, tc.h)))
			for _, size := range config.DefaultThumbnailSizes() {
				path := fmt.Sprintf("/_matrix/client/v1/media/thumbnail/a.example/%s?width=%d&height=%d&method=%s", id, size.Width, size.Height, size.Method)
				for attempt := range 2 { // generated, then served from S3
					before := e.counter("atoll_media_thumbnails_generated_total")
					status, body, h := e.do(http.MethodGet, hostA, path, aliceToken, "", nil)
					if status != http.StatusOK || h.Get("Content-Type") != tc.wantType {
						t.Fatalf("%s: %d %s %s", path, status, h.Get("Content-Type"), body)
					}
					cfg, _, err := image.DecodeConfig(bytes.NewReader(body))
					if err != nil {
						t.Fatal(err)
					}
					wantW, wantH := thumbSize(tc.w, tc.h, size)
					if cfg.Width != wantW || cfg.Height != wantH {
						t.Fatalf("%dx%d %s of %dx%d: got %dx%d, want %dx%d", size.Width, size.Height, size.Method, tc.w, tc.h, cfg.Width, cfg.Height, wantW, wantH)
					}
					generated := e.counter("atoll_media_thumbnails_generated_total") - before
					if attempt == 1 && generated != 0 {
						t.Fatalf("second request generated the thumbnail again")
					}
				}
			}
		})
	}
	// Non-images and bombs.
	_, txt := e.upload(hostA, aliceToken, "text/plain", "not an image")
	status, body, _ := e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/thumbnail/a.example/"+txt+"?width=32&height=32&method=crop", aliceToken, "", nil)
	wantError(t, status, body, 400, "M_UNKNOWN")
	_, bomb := e.upload(hostA, aliceToken, "image/png", string(bombPNG(t)))
	status, body, _ = e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/thumbnail/a.example/"+bomb+"?width=32&height=32&method=crop", aliceToken, "", nil)
	wantError(t, status, body, 413, "M_TOO_LARGE")
	_, liar := e.upload(hostA, aliceToken, "image/png", "\x89PNG\r\n\x1a\n but not really")
	status, body, _ = e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/thumbnail/a.example/"+liar+"?width=32&height=32", aliceToken, "", nil)
	wantError(t, status, body, 400, "M_UNKNOWN")
	for _, q := range []string{"width=0&height=32", "width=a&height=32", "width=32&height=32&method=zoom", "height=32"} {
		status, body, _ = e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/thumbnail/a.example/"+txt+"?"+q, aliceToken, "", nil)
		wantError(t, status, body, 400, "M_INVALID_PARAM")
	}
}

// thumbSize is what a configured size gives for a source image.
func thumbSize(sw, sh int, s config.ThumbnailSize) (int, int) {
	if s.Method == config.MethodCrop {
		cw, ch := sw, sw*s.Height/s.Width
		if ch > sh {
			cw, ch = sh*s.Width/s.Height, sh
		}
		if cw > s.Width {
			return s.Width, s.Height
		}
		return cw, ch
	}
	if sw <= s.Width && sh <= s.Height {
		return sw, sh
	}
	if sw*s.Height > sh*s.Width {
		return s.Width, sh * s.Width / sw
	}
	return sw * s.Height / sh, s.Height
}

func bombPNG(t testing.TB) []byte {
	t.Helper()
	b := encodeImage(t, "png", 1, 1)
	// Claim 100000x100000 pixels in IHDR (and fix its CRC).
	copy(b[16:24], []byte{0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0})
	crc := crc32IEEE(b[12:29])
	copy(b[29:33], []byte{byte(crc >> 24), byte(crc >> 16), byte(crc >> 8), byte(crc)})
	return b
}

func TestQuarantine(t *testing.T) {
	e := newEnv(t)
	img := string(encodeImage(t, "png", 64, 64))
	_, byMedia := e.upload(hostA, aliceToken, "image/png", img)
	_, inRoom1 := e.upload(hostA, aliceToken, "image/png", img)
	_, inRoom2 := e.upload(hostA, aliceToken, "image/png", img)
	_, ofMallory1 := e.upload(hostA, malloryToken, "image/png", img)
	_, ofMallory2 := e.upload(hostA, malloryToken, "image/png", img)
	_, untouched := e.upload(hostA, aliceToken, "image/png", img)
	admin := e.hs.AdminToken
	for _, tc := range []struct{ path, body string }{
		{"/_atoll/media/v1/tenants/tenant_a/quarantine/media", `{"server_name":"a.example","mxc_uris":["mxc://a.example/` + byMedia + `"]}`},
		{"/_atoll/media/v1/tenants/tenant_a/quarantine/room", `{"server_name":"a.example","mxc_uris":["mxc://a.example/` + inRoom1 + `","mxc://a.example/` + inRoom2 + `"]}`},
		{"/_atoll/media/v1/tenants/tenant_a/quarantine/user", `{"user_id":"@mallory:a.example"}`},
	} {
		status, body, _ := e.do(http.MethodPost, hostA, tc.path, admin, tc.body, nil)
		if status != http.StatusOK {
			t.Fatalf("%s: %d %s", tc.path, status, body)
		}
	}
	for _, id := range []string{byMedia, inRoom1, inRoom2, ofMallory1, ofMallory2} {
		for _, path := range []string{"/_matrix/client/v1/media/download/a.example/" + id, "/_matrix/client/v1/media/thumbnail/a.example/" + id + "?width=32&height=32"} {
			status, body, _ := e.do(http.MethodGet, hostA, path, aliceToken, "", nil)
			wantError(t, status, body, 404, "M_NOT_FOUND")
		}
	}
	if status, _, _ := e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/download/a.example/"+untouched, aliceToken, "", nil); status != 200 {
		t.Fatalf("untouched media: %d", status)
	}
	// Only the admin token may quarantine.
	status, body, _ := e.do(http.MethodPost, hostA, "/_atoll/media/v1/tenants/tenant_a/quarantine/user", aliceToken, `{"user_id":"@alice:a.example"}`, nil)
	wantError(t, status, body, 403, "M_FORBIDDEN")
}

func TestDeleteMediaAndTenant(t *testing.T) {
	e := newEnv(t)
	_, id := e.upload(hostA, aliceToken, "image/png", string(encodeImage(t, "png", 64, 64)))
	_, keep := e.upload(hostA, aliceToken, "text/plain", "keep")
	if status, _, _ := e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/thumbnail/a.example/"+id+"?width=32&height=32&method=crop", aliceToken, "", nil); status != 200 {
		t.Fatalf("thumbnail: %d", status)
	}
	if n := len(e.objects(tenantA)); n != 3 {
		t.Fatalf("objects before delete: %v", e.objects(tenantA))
	}
	status, body, _ := e.do(http.MethodPost, hostA, "/_atoll/media/v1/tenants/tenant_a/media/delete", e.hs.AdminToken,
		`{"server_name":"a.example","mxc_uris":["mxc://a.example/`+id+`"]}`, nil)
	if status != 200 || !strings.Contains(string(body), `"deleted":1`) {
		t.Fatalf("delete: %d %s", status, body)
	}
	// Gone from the bucket for real (asked of MinIO directly), thumbnail included.
	if keys := e.objects(tenantA); len(keys) != 1 || keys[0] != "local/"+keep {
		t.Fatalf("objects after delete: %v", keys)
	}
	status, body, _ = e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/download/a.example/"+id, aliceToken, "", nil)
	wantError(t, status, body, 404, "M_NOT_FOUND")

	bucket, _, _ := e.store.Location(tenantA)
	status, body, _ = e.do(http.MethodDelete, hostA, "/_atoll/media/v1/tenants/tenant_a", e.hs.AdminToken, "", nil)
	if status != 200 {
		t.Fatalf("delete tenant: %d %s", status, body)
	}
	if e.s3.BucketExists(t, bucket) || e.rowCount(tenantA, false) != 0 {
		t.Fatalf("tenant delete left bucket %v or %d rows", e.s3.BucketExists(t, bucket), e.rowCount(tenantA, false))
	}
	// Re-creating works, and uploads work again.
	if status, body, _ = e.do(http.MethodPut, hostA, "/_atoll/media/v1/tenants/tenant_a", e.hs.AdminToken, "", nil); status != 200 {
		t.Fatalf("create tenant: %d %s", status, body)
	}
	if !e.s3.BucketExists(t, bucket) {
		t.Fatal("PUT tenant did not create the bucket")
	}
	e.upload(hostA, aliceToken, "text/plain", "again")
}

func TestPrefixMode(t *testing.T) {
	e := newEnv(t, withConfig(func(c *config.Config) { c.S3.BucketMode = config.BucketModePrefix }))
	_, id := e.upload(hostA, aliceToken, "text/plain", "in the shared bucket")
	if keys := e.s3.Objects(t, e.s3.Bucket, ""); len(keys) != 1 || keys[0] != tenantA+"/local/"+id {
		t.Fatalf("shared bucket objects = %v", keys)
	}
	if status, _, _ := e.do(http.MethodDelete, hostA, "/_atoll/media/v1/tenants/tenant_a", e.hs.AdminToken, "", nil); status != 200 {
		t.Fatalf("delete tenant: %d", status)
	}
	if keys := e.s3.Objects(t, e.s3.Bucket, ""); len(keys) != 0 || !e.s3.BucketExists(t, e.s3.Bucket) {
		t.Fatalf("prefix-mode tenant delete: objects %v", keys)
	}
}

func TestAsyncUpload(t *testing.T) {
	e := newEnv(t)
	status, body, _ := e.do(http.MethodPost, hostA, "/_matrix/media/v1/create", aliceToken, "", nil)
	var created struct {
		ContentURI      string `json:"content_uri"`
		UnusedExpiresAt int64  `json:"unused_expires_at"`
	}
	if status != 200 || json.Unmarshal(body, &created) != nil || created.UnusedExpiresAt <= time.Now().UnixMilli() {
		t.Fatalf("create: %d %s", status, body)
	}
	id := strings.TrimPrefix(created.ContentURI, "mxc://a.example/")
	dl := "/_matrix/client/v1/media/download/a.example/" + id
	status, body, _ = e.do(http.MethodGet, hostA, dl+"?timeout_ms=0", aliceToken, "", nil)
	wantError(t, status, body, 504, "M_NOT_YET_UPLOADED")

	put := "/_matrix/media/v3/upload/a.example/" + id
	status, body, _ = e.do(http.MethodPut, hostA, put, malloryToken, "not mine", nil)
	wantError(t, status, body, 403, "M_FORBIDDEN")
	// A download waiting for the upload gets it when it arrives.
	done := make(chan string, 1)
	go func() {
		resp := e.request(http.MethodGet, hostA, dl+"?timeout_ms=10000", aliceToken, nil, -1, nil)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	time.Sleep(300 * time.Millisecond)
	status, body, _ = e.do(http.MethodPut, hostA, put, aliceToken, "late content", map[string]string{"Content-Type": "text/plain"})
	if status != 200 {
		t.Fatalf("async upload: %d %s", status, body)
	}
	if got := <-done; got != "200 late content" {
		t.Fatalf("waiting download got %q", got)
	}
	status, body, _ = e.do(http.MethodPut, hostA, put, aliceToken, "again", nil)
	wantError(t, status, body, 409, "M_CANNOT_OVERWRITE_MEDIA")
	status, body, _ = e.do(http.MethodPut, hostA, "/_matrix/media/v3/upload/a.example/unknownid", aliceToken, "x", nil)
	wantError(t, status, body, 404, "M_NOT_FOUND")
	// Limit on outstanding IDs.
	e2 := newEnv(t, withConfig(func(c *config.Config) { c.MaxPendingUploads = 1 }))
	e2.do(http.MethodPost, hostA, "/_matrix/media/v1/create", aliceToken, "", nil)
	status, body, _ = e2.do(http.MethodPost, hostA, "/_matrix/media/v1/create", aliceToken, "", nil)
	wantError(t, status, body, 429, "M_LIMIT_EXCEEDED")
}

func TestQuota(t *testing.T) {
	e := newEnv(t, withConfig(func(c *config.Config) { c.UserQuotaBytes = 1000 }))
	e.upload(hostA, aliceToken, "text/plain", strings.Repeat("a", 600))
	status, body, _ := e.do(http.MethodPost, hostA, "/_matrix/media/v3/upload", aliceToken, strings.Repeat("b", 600), nil)
	wantError(t, status, body, 403, "M_FORBIDDEN")
	// Chunked (no length): refused after the transfer, and the object is removed.
	resp := e.request(http.MethodPost, hostA, "/_matrix/media/v3/upload", aliceToken, io.MultiReader(strings.NewReader(strings.Repeat("c", 600))), -1, nil)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, resp.StatusCode, b, 403, "M_FORBIDDEN")
	e.upload(hostA, malloryToken, "text/plain", strings.Repeat("d", 600)) // another user's quota
	if got := e.counter("atoll_media_quota_rejections_total"); got != 2 {
		t.Fatalf("atoll_media_quota_rejections_total = %v, want 2", got)
	}
	if n := len(e.objects(tenantA)); n != 2 {
		t.Fatalf("objects = %v, want the 2 accepted uploads", e.objects(tenantA))
	}
}

func TestLegacyEndpoints(t *testing.T) {
	cutoff := time.Date(2024, 9, 1, 0, 0, 0, 0, time.UTC)
	e := newEnv(t, withConfig(func(c *config.Config) { c.LegacyMediaBefore = cutoff }))
	e.clock.Set(cutoff.Add(-time.Hour))
	_, old := e.upload(hostA, aliceToken, "image/png", string(encodeImage(t, "png", 50, 50)))
	e.clock.Set(cutoff.Add(time.Hour))
	_, recent := e.upload(hostA, aliceToken, "image/png", string(encodeImage(t, "png", 50, 50)))
	e.clock.Set(time.Time{})
	for _, tc := range []struct {
		path       string
		wantStatus int
	}{
		{"/_matrix/media/v3/download/a.example/" + old, 200},
		{"/_matrix/media/v3/download/a.example/" + old + "/x.png", 200},
		{"/_matrix/media/v3/thumbnail/a.example/" + old + "?width=32&height=32", 200},
		{"/_matrix/media/v3/download/a.example/" + recent, 404},
		{"/_matrix/media/v3/thumbnail/a.example/" + recent + "?width=32&height=32", 404},
		// Never fetched from remote servers without authentication.
		{"/_matrix/media/v3/download/b.example/" + old, 404},
	} {
		t.Run(tc.path, func(t *testing.T) {
			status, body, _ := e.do(http.MethodGet, hostA, tc.path, "", "", nil)
			if tc.wantStatus == 404 {
				wantError(t, status, body, 404, "M_NOT_FOUND")
			} else if status != tc.wantStatus {
				t.Fatalf("%d %s", status, body)
			}
		})
	}
	if e.federationHits() != 0 {
		t.Fatal("legacy endpoint fetched over federation")
	}
}

func TestFederation(t *testing.T) {
	e := newEnv(t)
	_, id := e.upload(hostA, aliceToken, "text/plain", "from a to b")
	_, img := e.upload(hostA, aliceToken, "image/jpeg", string(encodeImage(t, "jpeg", 640, 480)))

	// Bob on tenant B reads Alice's media: fetched from a.example over federation, cached in B.
	path := "/_matrix/client/v1/media/download/a.example/" + id
	for range 2 {
		status, body, _ := e.do(http.MethodGet, hostB, path, bobToken, "", nil)
		if status != 200 || string(body) != "from a to b" {
			t.Fatalf("remote download: %d %s", status, body)
		}
	}
	if hits := e.federationHits(); hits != 1 {
		t.Fatalf("federation downloads = %d, want 1 (then cached)", hits)
	}
	if keys := e.objects(tenantB); len(keys) != 1 || keys[0] != "remote/a.example/"+id {
		t.Fatalf("tenant B cache = %v", keys)
	}
	// Thumbnails of remote media are made from the cached copy.
	status, body, _ := e.do(http.MethodGet, hostB, "/_matrix/client/v1/media/thumbnail/a.example/"+img+"?width=96&height=96&method=crop", bobToken, "", nil)
	if cfg, _, err := image.DecodeConfig(bytes.NewReader(body)); status != 200 || err != nil || cfg.Width != 96 {
		t.Fatalf("remote thumbnail: %d %v", status, err)
	}
	// Missing remote media.
	status, body, _ = e.do(http.MethodGet, hostB, "/_matrix/client/v1/media/download/a.example/doesnotexist", bobToken, "", nil)
	wantError(t, status, body, 404, "M_NOT_FOUND")

	// The federation answer itself: multipart/mixed, JSON then file.
	resp := e.request(http.MethodGet, hostA, "/_matrix/federation/v1/media/download/"+id, "", nil, -1, map[string]string{"Authorization": federationAuth})
	defer resp.Body.Close()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("federation content type %q", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	p1, _ := mr.NextPart()
	meta, _ := io.ReadAll(p1)
	p2, _ := mr.NextPart()
	file, _ := io.ReadAll(p2)
	if p1.Header.Get("Content-Type") != "application/json" || string(meta) != "{}" || string(file) != "from a to b" || p2.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("parts: %q %q %q", meta, file, p2.Header)
	}
	// Unsigned federation requests are refused.
	status, body, _ = e.do(http.MethodGet, hostA, "/_matrix/federation/v1/media/download/"+id, "", "", nil)
	wantError(t, status, body, 401, "M_UNAUTHORIZED")
	// Federation thumbnail.
	resp2 := e.request(http.MethodGet, hostA, "/_matrix/federation/v1/media/thumbnail/"+img+"?width=320&height=240&method=scale", "", nil, -1, map[string]string{"Authorization": federationAuth})
	defer resp2.Body.Close()
	_, params, _ = mime.ParseMediaType(resp2.Header.Get("Content-Type"))
	mr = multipart.NewReader(resp2.Body, params["boundary"])
	_, _ = mr.NextPart()
	p2, err = mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	thumb, _ := io.ReadAll(p2)
	if cfg, _, err := image.DecodeConfig(bytes.NewReader(thumb)); err != nil || cfg.Width != 320 || cfg.Height != 240 {
		t.Fatalf("federation thumbnail %v %v", cfg, err)
	}

	// Purging B's remote cache removes the cached object.
	status, body, _ = e.do(http.MethodPost, hostB, "/_atoll/media/v1/tenants/tenant_b/purge_remote_cache", e.hs.AdminToken,
		fmt.Sprintf(`{"before_ts":%d}`, time.Now().Add(time.Minute).UnixMilli()), nil)
	if status != 200 || len(e.objects(tenantB)) != 0 {
		t.Fatalf("purge: %d %s, objects left %v", status, body, e.objects(tenantB))
	}
}

func TestRetention(t *testing.T) {
	e := newEnv(t, withConfig(func(c *config.Config) {
		c.Retention.LocalMaxAge = 24 * time.Hour
		c.Retention.RemoteMaxAge = time.Hour
	}))
	start := time.Now()
	e.clock.Set(start.Add(-48 * time.Hour))
	_, old := e.upload(hostA, aliceToken, "text/plain", "old")
	e.clock.Set(start)
	_, fresh := e.upload(hostA, aliceToken, "text/plain", "fresh")
	// Cache one remote item in tenant B, two hours ago.
	e.clock.Set(start.Add(-2 * time.Hour))
	if status, _, _ := e.do(http.MethodGet, hostB, "/_matrix/client/v1/media/download/a.example/"+fresh, bobToken, "", nil); status != 200 {
		t.Fatalf("remote fetch: %d", status)
	}
	e.clock.Set(start)
	status, body, _ := e.do(http.MethodPost, hostA, "/_atoll/media/v1/retention/run", e.hs.AdminToken, "", nil)
	if status != 200 || !strings.Contains(string(body), `"deleted_local":1`) || !strings.Contains(string(body), `"deleted_remote":1`) {
		t.Fatalf("retention: %d %s", status, body)
	}
	if keys := e.objects(tenantA); len(keys) != 1 || keys[0] != "local/"+fresh {
		t.Fatalf("after retention A holds %v (old was %s)", keys, old)
	}
	if keys := e.objects(tenantB); len(keys) != 0 {
		t.Fatalf("after retention B holds %v", keys)
	}
}

func TestPreview(t *testing.T) {
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, `<html><head><meta property="og:title" content="A title"><meta property="og:image" content="/i.png"></head></html>`)
		case "/i.png":
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write(encodeImage(t, "png", 20, 10))
		}
	}))
	t.Cleanup(page.Close)
	e := newEnv(t)
	status, body, _ := e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/preview_url?url="+page.URL+"/", aliceToken, "", nil)
	var og map[string]any
	if status != 200 || json.Unmarshal(body, &og) != nil || og["og:title"] != "A title" || og["og:image:width"] != 20.0 {
		t.Fatalf("preview: %d %s", status, body)
	}
	mxc, _ := og["og:image"].(string)
	imgID, ok := strings.CutPrefix(mxc, "mxc://a.example/")
	if !ok {
		t.Fatalf("og:image = %v", og["og:image"])
	}
	if status, _, _ := e.do(http.MethodGet, hostA, "/_matrix/client/v1/media/download/a.example/"+imgID, aliceToken, "", nil); status != 200 {
		t.Fatalf("preview image download: %d", status)
	}
	// Without the test-only flag, loopback is refused at dial time.
	strict := newEnv(t, withConfig(func(c *config.Config) { c.Preview.AllowPrivateAddressesForTests = false }))
	status, body, _ = strict.do(http.MethodGet, hostA, "/_matrix/client/v1/media/preview_url?url="+page.URL+"/", aliceToken, "", nil)
	wantError(t, status, body, 403, "M_FORBIDDEN")
	status, body, _ = strict.do(http.MethodGet, hostA, "/_matrix/client/v1/media/preview_url?url=file:///etc/passwd", aliceToken, "", nil)
	wantError(t, status, body, 400, "M_INVALID_PARAM")
}

func TestMetricsNames(t *testing.T) {
	e := newEnv(t)
	e.upload(hostA, aliceToken, "text/plain", "x")
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "atoll_media_") {
			t.Errorf("metric %s lacks the atoll_media_ prefix", mf.GetName())
		}
		names[mf.GetName()] = true
	}
	for _, want := range []string{"atoll_media_received_bytes_total", "atoll_media_s3_request_duration_seconds", "atoll_media_http_requests_total"} {
		if !names[want] {
			t.Errorf("metric %s not exported", want)
		}
	}
}
