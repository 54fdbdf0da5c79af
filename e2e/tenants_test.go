package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// tenant is one tenant created for the test and the shard address its clients use.
type tenant struct {
	id, serverName string
	addr           string // loopback address forwarded to a shard's client port
	media          string // the same for the shard's media sidecar (the ingress routes media there)
}

// mxClient is a Matrix client for one user of one tenant, choosing the tenant by Host header
// as the chart's ingress does.
type mxClient struct {
	t      *testing.T
	tenant tenant
	userID string
	token  string
	txn    int
}

func (c *mxClient) do(method, path string, body any) (int, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.tenant.addr+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Host = c.tenant.serverName
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s (Host %s): %v", method, path, c.tenant.serverName, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if len(b) > 0 && json.Unmarshal(b, &out) != nil {
		out["_raw"] = string(b)
	}
	return resp.StatusCode, out
}

// must does a request and fails the test unless it answers 200.
func (c *mxClient) must(method, path string, body any) map[string]any {
	c.t.Helper()
	code, out := c.do(method, path, body)
	if code != http.StatusOK {
		c.t.Fatalf("%s %s as %s on %s: %d %v", method, path, c.userID, c.tenant.serverName, code, out)
	}
	return out
}

func register(t *testing.T, tn tenant, user string) *mxClient {
	t.Helper()
	c := &mxClient{t: t, tenant: tn}
	out := c.must("POST", "/_matrix/client/v3/register", map[string]any{
		"username": user, "password": "e2e-" + user + "-password", "auth": map[string]any{"type": "m.login.dummy"},
	})
	c.userID, _ = out["user_id"].(string)
	c.token, _ = out["access_token"].(string)
	if c.token == "" || c.userID != "@"+user+":"+tn.serverName {
		t.Fatalf("register %s on %s: %v", user, tn.serverName, out)
	}
	return c
}

// on returns the client reporting to t (a subtest); the client's state stays shared.
func (c *mxClient) on(t *testing.T) *mxClient {
	c.t = t
	return c
}

func (c *mxClient) send(roomID, text string) string {
	c.t.Helper()
	c.txn++ // transaction IDs are per access token: never reuse one
	out := c.must("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/e2e%d", url.PathEscape(roomID), c.txn),
		map[string]any{"msgtype": "m.text", "body": text})
	id, _ := out["event_id"].(string)
	if id == "" {
		c.t.Fatalf("send to %s: no event_id: %v", roomID, out)
	}
	return id
}

// waitMessage syncs until a message with the body text from sender shows up in the room.
func (c *mxClient) waitMessage(roomID, sender, text string) {
	c.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	since := ""
	for time.Now().Before(deadline) {
		path := "/_matrix/client/v3/sync?timeout=5000"
		if since != "" {
			path += "&since=" + url.QueryEscape(since)
		}
		out := c.must("GET", path, nil)
		since, _ = out["next_batch"].(string)
		join, _ := dig(out, "rooms", "join").(map[string]any)
		room, _ := join[roomID].(map[string]any)
		events, _ := dig(room, "timeline", "events").([]any)
		for _, e := range events {
			ev, _ := e.(map[string]any)
			if ev["type"] == "m.room.message" && ev["sender"] == sender && dig(ev, "content", "body") == text {
				return
			}
		}
	}
	c.t.Fatalf("%s did not see %q from %s in %s within 90s", c.userID, text, sender, roomID)
}

func dig(m any, keys ...string) any {
	for _, k := range keys {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[k]
	}
	return m
}

// adminTokenFile writes the admin token the hook generated to a file for atollctl.
func adminTokenFile(t *testing.T) string {
	t.Helper()
	return adminTokenFileIn(t, env.namespace)
}

func adminTokenFileIn(t *testing.T, ns string) string {
	t.Helper()
	secret, err := env.cs.CoreV1().Secrets(ns).Get(context.Background(), release+"-atoll-generated", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("admin token: %v", err)
	}
	f := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(f, secret.Data["admin-token"], 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// atollctl runs the atollctl built from this checkout against a shard's admin API.
func atollctl(t *testing.T, adminAddr, tokenFile string, args ...string) string {
	t.Helper()
	all := append([]string{"tenant", "--admin-url", "http://" + adminAddr, "--admin-token-file", tokenFile}, args...)
	out, err := exec.Command(env.atollctl, all...).CombinedOutput()
	if err != nil {
		t.Fatalf("atollctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestTenantsAndMessages creates two tenants through atollctl against a shard's admin API,
// registers users on both (each through a different shard, so requests for a tenant another
// shard owns are forwarded), and has them exchange messages, first inside a tenant, then in
// a room federated between the two tenants.
func TestTenantsAndMessages(t *testing.T) {
	dumpOnFailure(t)
	shards := podsOf(t, "homeserver")
	first := portForward(t, "pod/"+shards[0].Name, 8081, 8008, 8090)
	second := first
	if len(shards) > 1 {
		second = portForward(t, "pod/"+shards[1].Name, 8008, 8090)
	}

	tokenFile := adminTokenFile(t)

	suffix := time.Now().Format("150405")
	alpha := tenant{id: "e2e_alpha_" + suffix, serverName: "alpha" + suffix + ".e2e.test", addr: first[8008], media: first[8090]}
	beta := tenant{id: "e2e_beta_" + suffix, serverName: "beta" + suffix + ".e2e.test", addr: second[8008], media: second[8090]}

	ok := t.Run("create tenants with atollctl", func(t *testing.T) {
		for _, tn := range []tenant{alpha, beta} {
			out := atollctl(t, first[8081], tokenFile, "create", "--id", tn.id, "--server-name", tn.serverName, "--registration", "open")
			t.Logf("created %s: %s", tn.id, strings.TrimSpace(out))
		}
		list := atollctl(t, first[8081], tokenFile, "list")
		for _, tn := range []tenant{alpha, beta} {
			if !strings.Contains(list, tn.id) {
				t.Errorf("atollctl tenant list lacks %s:\n%s", tn.id, list)
			}
		}
	})
	if !ok {
		t.FailNow()
	}

	var alice, carol, bob *mxClient
	ok = t.Run("register users on both tenants", func(t *testing.T) {
		alice = register(t, alpha, "alice")
		carol = register(t, alpha, "carol")
		bob = register(t, beta, "bob")
	})
	if !ok {
		t.FailNow()
	}

	t.Run("messages inside a tenant", func(t *testing.T) {
		a, c := alice.on(t), carol.on(t)
		room := a.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "invite": []string{c.userID}})
		roomID, _ := room["room_id"].(string)
		c.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
		a.send(roomID, "hello carol")
		c.waitMessage(roomID, a.userID, "hello carol")
		c.send(roomID, "hello alice")
		a.waitMessage(roomID, c.userID, "hello alice")
	})

	var federated string
	t.Run("federated room between the tenants", func(t *testing.T) {
		a, b := alice.on(t), bob.on(t)
		room := a.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "invite": []string{b.userID}})
		roomID, _ := room["room_id"].(string)
		b.must("POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(alpha.serverName), map[string]any{})
		a.send(roomID, "hello beta")
		b.waitMessage(roomID, a.userID, "hello beta")
		b.send(roomID, "hello alpha")
		a.waitMessage(roomID, b.userID, "hello alpha")
		federated = roomID
	})

	t.Run("push notification reaches a fake provider", func(t *testing.T) {
		if federated == "" {
			t.Skip("needs the federated room")
		}
		a, b := alice.on(t), bob.on(t)
		fake := startFakePush(t)
		b.must("POST", "/_matrix/client/v3/pushers/set", map[string]any{
			"kind": "http", "app_id": "org.atoll.e2e", "app_display_name": "atoll e2e", "device_display_name": "e2e", "lang": "en",
			"pushkey": fmt.Sprintf("http://%s.%s.svc:8080/push/bob", fakePushName, env.namespace),
			"data":    map[string]any{"url": fmt.Sprintf("http://%s-push.%s.svc:8095/_matrix/push/v1/notify", release, env.namespace)},
		})
		eventID := a.send(federated, "a message that should be pushed to bob")
		t.Logf("pushed: %s", waitPush(t, fake, eventID))
	})

	t.Run("media uploaded on one tenant is downloaded on the other", func(t *testing.T) {
		a, b := alice.on(t), bob.on(t)
		body := []byte("atoll e2e media " + suffix)
		uri := a.upload(body, "text/plain")
		server, id, ok := strings.Cut(strings.TrimPrefix(uri, "mxc://"), "/")
		if !ok || server != alpha.serverName {
			t.Fatalf("content_uri %q is not on %s", uri, alpha.serverName)
		}
		got := b.download(server, id)
		if !bytes.Equal(got, body) {
			t.Fatalf("%s downloaded %q, want %q", b.userID, got, body)
		}
		bucket := "atoll-" + strings.ReplaceAll(alpha.id, "_", "-")
		checkObject(t, bucket, "local/"+id, int64(len(body)))
	})
}
