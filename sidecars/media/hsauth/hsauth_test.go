package hsauth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/sidecars/media/hsauth"
	"github.com/atoll-matrix/atoll/sidecars/media/hsauth/hsauthtest"
)

func TestAuthenticate(t *testing.T) {
	hs := hsauthtest.New(t)
	hs.AddTenant("acme", "acme.example")
	hs.AddUser("acme.example", "tok-alice", hsauthtest.User{UserID: "@alice:acme.example", DeviceID: "ABC"})
	now := time.Unix(1000, 0)
	c := hsauth.New(hsauth.Options{BaseURL: hs.URL, AdminToken: hs.AdminToken, CacheTTL: 30 * time.Second, CacheSize: 2, Now: func() time.Time { return now }})
	ctx := context.Background()

	for _, tc := range []struct {
		name       string
		host, tok  string
		wantStatus int
		wantCode   string
	}{
		{name: "ok", host: "acme.example", tok: "tok-alice"},
		{name: "bad token", host: "acme.example", tok: "nope", wantStatus: 401, wantCode: "M_UNKNOWN_TOKEN"},
		{name: "unknown host", host: "other.example", tok: "tok-alice", wantStatus: 404, wantCode: "M_NOT_FOUND"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := c.Authenticate(ctx, tc.host, tc.tok)
			if tc.wantCode == "" {
				if err != nil {
					t.Fatal(err)
				}
				if id != (hsauth.Identity{TenantID: "acme", ServerName: "acme.example", UserID: "@alice:acme.example", DeviceID: "ABC"}) {
					t.Fatalf("identity = %+v", id)
				}
				return
			}
			var me *hsauth.MatrixError
			if !errors.As(err, &me) || me.Status != tc.wantStatus || me.ErrCode != tc.wantCode {
				t.Fatalf("err = %v, want %d %s", err, tc.wantStatus, tc.wantCode)
			}
		})
	}

	calls := hs.AuthCalls()
	if _, err := c.Authenticate(ctx, "acme.example", "tok-alice"); err != nil {
		t.Fatal(err)
	}
	if hs.AuthCalls() != calls {
		t.Fatal("cached identity not used")
	}
	now = now.Add(31 * time.Second)
	if _, err := c.Authenticate(ctx, "acme.example", "tok-alice"); err != nil {
		t.Fatal(err)
	}
	if hs.AuthCalls() != calls+1 {
		t.Fatal("expired identity served from cache")
	}
	// Bounded: three distinct successful answers in a cache of two.
	hs.AddTenant("beta", "beta.example")
	hs.AddUser("beta.example", "tok-bob", hsauthtest.User{UserID: "@bob:beta.example"})
	hs.AddUser("beta.example", "tok-carol", hsauthtest.User{UserID: "@carol:beta.example"})
	for _, tok := range []string{"tok-bob", "tok-carol"} {
		if _, err := c.Authenticate(ctx, "beta.example", tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.CacheLen(); n != 2 {
		t.Fatalf("cache holds %d entries, want 2", n)
	}
	c.Forget("beta.example")
	if n := c.CacheLen(); n != 0 {
		t.Fatalf("cache holds %d entries after Forget, want 0", n)
	}
}

func TestTenantByHost(t *testing.T) {
	hs := hsauthtest.New(t)
	hs.AddTenant("acme", "acme.example")
	c := hsauth.New(hsauth.Options{BaseURL: hs.URL, AdminToken: hs.AdminToken})
	tn, err := c.TenantByHost(context.Background(), "acme.example")
	if err != nil || tn != (hsauth.Tenant{TenantID: "acme", ServerName: "acme.example"}) {
		t.Fatalf("TenantByHost = %+v, %v", tn, err)
	}
	var me *hsauth.MatrixError
	if _, err := c.TenantByHost(context.Background(), "nope.example"); !errors.As(err, &me) || me.ErrCode != "M_NOT_FOUND" {
		t.Fatalf("unknown host: %v", err)
	}
}

func TestUnavailable(t *testing.T) {
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	t.Cleanup(broken.Close)
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("{not json"))
	}))
	t.Cleanup(garbage.Close)
	for _, tc := range []struct {
		name string
		url  string
	}{
		{name: "closed port", url: "http://127.0.0.1:1"},
		{name: "server error", url: broken.URL},
		{name: "garbage answer", url: garbage.URL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := hsauth.New(hsauth.Options{BaseURL: tc.url, AdminToken: "x", HTTPClient: &http.Client{Timeout: 2 * time.Second}})
			_, err := c.Authenticate(context.Background(), "acme.example", "t")
			var me *hsauth.MatrixError
			if !errors.Is(err, hsauth.ErrUnavailable) || errors.As(err, &me) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
		})
	}
}
