package fedmedia_test

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/atoll-matrix/atoll/sidecars/media/fedmedia"
)

func TestContentDisposition(t *testing.T) {
	for _, tc := range []struct {
		inline bool
		name   string
		want   string
	}{
		{true, "", "inline"},
		{false, "report.pdf", `attachment; filename="report.pdf"`},
		{true, `a"b\c.png`, `inline; filename="a\"b\\c.png"`},
		{false, "café.txt", `attachment; filename="caf_.txt"; filename*=utf-8''caf%C3%A9.txt`},
		{false, "a\r\nb", `attachment; filename="a__b"; filename*=utf-8''a%0D%0Ab`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fedmedia.ContentDisposition(tc.inline, tc.name)
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if tc.name != "" {
				if _, params, err := mime.ParseMediaType(got); err != nil || params["filename"] != tc.name {
					t.Fatalf("ParseMediaType(%q) = %v, %v; want filename %q", got, params, err, tc.name)
				}
			}
		})
	}
}

func TestDownloadRoundTrip(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/_matrix/federation/v1/media/download/ok":
			if r.Header.Get("Authorization") != "X-Matrix test" {
				http.Error(w, "unsigned", http.StatusUnauthorized)
				return
			}
			_ = fedmedia.WriteDownload(w, "text/plain", fedmedia.ContentDisposition(true, "hello.txt"), strings.NewReader("hello world"))
		case "/_matrix/federation/v1/media/download/big":
			_ = fedmedia.WriteDownload(w, "text/plain", "", strings.NewReader(strings.Repeat("x", 100)))
		case "/_matrix/federation/v1/media/download/json":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	f := &fedmedia.HTTPFetcher{
		Client:  srv.Client(),
		BaseURL: func(context.Context, string) (string, error) { return srv.URL, nil },
		Sign: func(req *http.Request, _, _ string) error {
			req.Header.Set("Authorization", "X-Matrix test")
			return nil
		},
		MaxBytes: 50,
	}
	ctx := context.Background()
	r, err := f.Download(ctx, "a.example", "b.example", "ok")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil || string(body) != "hello world" || r.ContentType != "text/plain" || r.FileName != "hello.txt" {
		t.Fatalf("got %q %q %q, %v", body, r.ContentType, r.FileName, err)
	}
	for _, tc := range []struct {
		id   string
		want error
	}{
		{"missing", fedmedia.ErrNotFound},
		{"json", fedmedia.ErrUnavailable},
		{"big", fedmedia.ErrTooLarge},
	} {
		t.Run(tc.id, func(t *testing.T) {
			r, err := f.Download(ctx, "a.example", "b.example", tc.id)
			if err == nil {
				_, err = io.ReadAll(r.Body)
				r.Body.Close()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}
