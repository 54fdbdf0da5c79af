package clientapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// exchange is one recorded request and its response, as read by testdata/openapi/validate.mjs.
type exchange struct {
	Label  string          `json:"label"`
	Method string          `json:"method"`
	Path   string          `json:"path"` // escaped request path, no query
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body"`
}

// specRecorder sends requests to a shard and keeps every exchange.
type specRecorder struct {
	t   *testing.T
	out []exchange
}

// do sends the request, fails the test unless the status is want and the body is JSON, and
// returns the decoded body (arrays are wrapped as {"array": [...]}, as shardtest does).
func (r *specRecorder) do(c *shardtest.Client, label, method, path string, body any, want int) map[string]any {
	r.t.Helper()
	status, raw := c.DoRaw(r.t, method, path, body)
	p := path
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	if !json.Valid(raw) {
		r.t.Fatalf("%s: %s %s: %d, body is not JSON: %q", label, method, path, status, raw)
	}
	r.out = append(r.out, exchange{Label: label, Method: method, Path: p, Status: status, Body: raw})
	if status != want {
		r.t.Fatalf("%s: %s %s: status %d, want %d: %s", label, method, path, status, want, raw)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		var arr []any
		if json.Unmarshal(raw, &arr) != nil {
			r.t.Fatalf("%s: decode %s: %v", label, raw, err)
		}
		m = map[string]any{"array": arr}
	}
	return m
}

func (r *specRecorder) errcode(c *shardtest.Client, label, method, path string, body any, want int, code string) {
	r.t.Helper()
	got := r.do(c, label, method, path, body, want)
	if got["errcode"] != code {
		r.t.Errorf("%s: errcode %v, want %s", label, got["errcode"], code)
	}
}

// TestResponsesMatchSpec drives a shard through the implemented Client-Server endpoints,
// records every response, and validates each body against the response schema the Matrix
// Client-Server OpenAPI definitions give for that operation and status code
// (testdata/openapi/validate.mjs, ajv). The definitions are read from a matrix-spec checkout
// named by ATOLL_TEST_MATRIX_SPEC_DIR; without it the endpoints are still driven and their statuses
// checked, and the schema validation is skipped (see docs/testing.md).
func TestResponsesMatchSpec(t *testing.T) {
	specDir := os.Getenv("ATOLL_TEST_MATRIX_SPEC_DIR")
	t.Run("validator", testValidator)
	s := shardtest.New(t)
	tn := s.CreateTenant(t, "spec")
	alice := tn.Register(t, "alice")
	bob := tn.Register(t, "bob")
	anon := &shardtest.Client{Tenant: tn}
	r := &specRecorder{t: t}
	esc := url.PathEscape
	const v3 = "/_matrix/client/v3"

	// Server discovery and accounts.
	r.do(anon, "versions", "GET", "/_matrix/client/versions", nil, 200)
	r.do(anon, "login flows", "GET", v3+"/login", nil, 200)
	r.do(anon, "register UIA", "POST", v3+"/register", map[string]any{"username": "carol", "password": "pw-carol-123"}, 401)
	r.do(anon, "register", "POST", v3+"/register", map[string]any{
		"username": "carol", "password": "pw-carol-123", "auth": map[string]any{"type": "m.login.dummy"},
	}, 200)
	r.do(anon, "register available", "GET", v3+"/register/available?username=dave", nil, 200)
	r.errcode(anon, "register taken", "GET", v3+"/register/available?username=carol", nil, 400, "M_USER_IN_USE")
	login := r.do(anon, "login", "POST", v3+"/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "carol"}, "password": "pw-carol-123",
	}, 200)
	r.errcode(anon, "login wrong password", "POST", v3+"/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "carol"}, "password": "wrong",
	}, 403, "M_FORBIDDEN")
	carol := &shardtest.Client{Tenant: tn, UserID: login["user_id"].(string), DeviceID: login["device_id"].(string), Token: login["access_token"].(string)}
	r.do(alice, "whoami", "GET", v3+"/account/whoami", nil, 200)
	r.errcode(anon, "whoami without token", "GET", v3+"/account/whoami", nil, 401, "M_MISSING_TOKEN")
	r.errcode(&shardtest.Client{Tenant: tn, Token: "nope"}, "whoami unknown token", "GET", v3+"/account/whoami", nil, 401, "M_UNKNOWN_TOKEN")
	r.errcode(alice, "unknown endpoint", "GET", v3+"/no/such/endpoint", nil, 404, "M_UNRECOGNIZED")
	r.do(alice, "capabilities", "GET", v3+"/capabilities", nil, 200)

	// Rooms.
	created := r.do(alice, "createRoom", "POST", v3+"/createRoom", map[string]any{"name": "Spec", "preset": "public_chat"}, 200)
	room := created["room_id"].(string)
	r.do(alice, "invite", "POST", v3+"/rooms/"+esc(room)+"/invite", map[string]any{"user_id": bob.UserID}, 200)
	r.do(bob, "join by id", "POST", v3+"/join/"+esc(room), map[string]any{}, 200)
	r.do(carol, "rooms join", "POST", v3+"/rooms/"+esc(room)+"/join", map[string]any{}, 200)
	// The spec documents 200, 403 and 429 for /join; a room this server does not know is a 404.
	r.errcode(carol, "join unknown room", "POST", v3+"/join/"+esc("!nope:"+tn.ServerName), map[string]any{}, 404, "M_NOT_FOUND")
	// Bob's first sync comes after his join (see the incremental sync below).
	initial := r.do(bob, "sync initial", "GET", v3+"/sync", nil, 200)
	sent := r.do(alice, "send", "PUT", v3+"/rooms/"+esc(room)+"/send/m.room.message/t1", map[string]any{"msgtype": "m.text", "body": "hello"}, 200)
	eventID := sent["event_id"].(string)
	r.do(alice, "put state", "PUT", v3+"/rooms/"+esc(room)+"/state/m.room.topic/", map[string]any{"topic": "specs"}, 200)
	r.do(alice, "put state with key", "PUT", v3+"/rooms/"+esc(room)+"/state/org.example.thing/k1", map[string]any{"a": 1}, 200)
	r.do(alice, "get state event", "GET", v3+"/rooms/"+esc(room)+"/state/m.room.topic/", nil, 200)
	r.do(alice, "get state event with key", "GET", v3+"/rooms/"+esc(room)+"/state/org.example.thing/k1", nil, 200)
	r.errcode(alice, "get missing state", "GET", v3+"/rooms/"+esc(room)+"/state/org.example.none/", nil, 404, "M_NOT_FOUND")
	r.do(alice, "get state", "GET", v3+"/rooms/"+esc(room)+"/state", nil, 200)
	toRedact := r.do(alice, "send 2", "PUT", v3+"/rooms/"+esc(room)+"/send/m.room.message/t2", map[string]any{"msgtype": "m.text", "body": "oops"}, 200)
	r.do(alice, "redact", "PUT", v3+"/rooms/"+esc(room)+"/redact/"+esc(toRedact["event_id"].(string))+"/r1", map[string]any{"reason": "typo"}, 200)
	r.do(alice, "joined_rooms", "GET", v3+"/joined_rooms", nil, 200)
	r.do(alice, "members", "GET", v3+"/rooms/"+esc(room)+"/members", nil, 200)
	r.do(alice, "joined_members", "GET", v3+"/rooms/"+esc(room)+"/joined_members", nil, 200)
	r.do(alice, "messages", "GET", v3+"/rooms/"+esc(room)+"/messages?dir=b&limit=10", nil, 200)
	r.do(alice, "messages forward", "GET", v3+"/rooms/"+esc(room)+"/messages?dir=f&limit=3", nil, 200)
	r.do(alice, "context", "GET", v3+"/rooms/"+esc(room)+"/context/"+esc(eventID)+"?limit=4", nil, 200)
	r.do(alice, "event", "GET", v3+"/rooms/"+esc(room)+"/event/"+esc(eventID), nil, 200)
	r.errcode(alice, "event unknown", "GET", v3+"/rooms/"+esc(room)+"/event/"+esc("$nope"), nil, 404, "M_NOT_FOUND")
	r.errcode(alice, "messages unknown room", "GET", v3+"/rooms/"+esc("!nope:"+tn.ServerName)+"/messages?dir=b", nil, 403, "M_FORBIDDEN")

	// Ephemeral data, account data, filters.
	r.do(bob, "receipt", "POST", v3+"/rooms/"+esc(room)+"/receipt/m.read/"+esc(eventID), map[string]any{}, 200)
	r.do(bob, "read_markers", "POST", v3+"/rooms/"+esc(room)+"/read_markers", map[string]any{"m.fully_read": eventID, "m.read": eventID}, 200)
	r.do(bob, "typing", "PUT", v3+"/rooms/"+esc(room)+"/typing/"+esc(bob.UserID), map[string]any{"typing": true, "timeout": 10000}, 200)
	r.do(bob, "account data put", "PUT", v3+"/user/"+esc(bob.UserID)+"/account_data/org.example.prefs", map[string]any{"theme": "dark"}, 200)
	r.do(bob, "account data get", "GET", v3+"/user/"+esc(bob.UserID)+"/account_data/org.example.prefs", nil, 200)
	r.errcode(bob, "account data missing", "GET", v3+"/user/"+esc(bob.UserID)+"/account_data/org.example.none", nil, 404, "M_NOT_FOUND")
	r.do(bob, "room account data put", "PUT", v3+"/user/"+esc(bob.UserID)+"/rooms/"+esc(room)+"/account_data/m.tag.example", map[string]any{"x": 1}, 200)
	r.do(bob, "room account data get", "GET", v3+"/user/"+esc(bob.UserID)+"/rooms/"+esc(room)+"/account_data/m.tag.example", nil, 200)
	filter := r.do(bob, "filter post", "POST", v3+"/user/"+esc(bob.UserID)+"/filter", map[string]any{
		"room": map[string]any{"timeline": map[string]any{"limit": 5}},
	}, 200)
	r.do(bob, "filter get", "GET", v3+"/user/"+esc(bob.UserID)+"/filter/"+esc(filter["filter_id"].(string)), nil, 200)
	r.do(bob, "sync incremental", "GET", v3+"/sync?timeout=0&since="+url.QueryEscape(initial["next_batch"].(string)), nil, 200)
	r.do(bob, "sync with filter", "GET", v3+"/sync?filter="+url.QueryEscape(filter["filter_id"].(string)), nil, 200)

	// Profile.
	r.do(alice, "displayname put", "PUT", v3+"/profile/"+esc(alice.UserID)+"/displayname", map[string]any{"displayname": "Alice"}, 200)
	r.do(anon, "displayname get", "GET", v3+"/profile/"+esc(alice.UserID)+"/displayname", nil, 200)
	r.do(anon, "profile get", "GET", v3+"/profile/"+esc(alice.UserID), nil, 200)
	r.errcode(anon, "profile unknown", "GET", v3+"/profile/"+esc("@nobody:"+tn.ServerName), nil, 404, "M_NOT_FOUND")

	// Directory.
	alias := "#spec:" + tn.ServerName
	r.do(alice, "alias put", "PUT", v3+"/directory/room/"+esc(alias), map[string]any{"room_id": room}, 200)
	r.do(anon, "alias get", "GET", v3+"/directory/room/"+esc(alias), nil, 200)
	r.do(alice, "room aliases", "GET", v3+"/rooms/"+esc(room)+"/aliases", nil, 200)
	r.do(alice, "visibility put", "PUT", v3+"/directory/list/room/"+esc(room), map[string]any{"visibility": "public"}, 200)
	r.do(anon, "visibility get", "GET", v3+"/directory/list/room/"+esc(room), nil, 200)
	r.do(anon, "publicRooms", "GET", v3+"/publicRooms?limit=10", nil, 200)
	r.do(alice, "publicRooms post", "POST", v3+"/publicRooms", map[string]any{"limit": 10, "filter": map[string]any{"generic_search_term": "spec"}}, 200)
	r.do(alice, "alias delete", "DELETE", v3+"/directory/room/"+esc(alias), nil, 200)
	r.errcode(anon, "alias unknown", "GET", v3+"/directory/room/"+esc(alias), nil, 404, "M_NOT_FOUND")

	// Devices, keys and to-device messages.
	r.do(alice, "devices", "GET", v3+"/devices", nil, 200)
	r.do(alice, "device get", "GET", v3+"/devices/"+esc(alice.DeviceID), nil, 200)
	r.do(alice, "device put", "PUT", v3+"/devices/"+esc(alice.DeviceID), map[string]any{"display_name": "laptop"}, 200)
	r.do(alice, "keys upload", "POST", v3+"/keys/upload", signedKeys(t, alice), 200)
	r.do(bob, "keys query", "POST", v3+"/keys/query", map[string]any{"device_keys": map[string]any{alice.UserID: []string{}}}, 200)
	r.do(bob, "keys claim", "POST", v3+"/keys/claim", map[string]any{"one_time_keys": map[string]any{alice.UserID: map[string]any{alice.DeviceID: "signed_curve25519"}}}, 200)
	r.do(bob, "keys changes", "GET", v3+"/keys/changes?from="+url.QueryEscape(initial["next_batch"].(string))+"&to=s999999_0", nil, 200)
	r.do(bob, "sendToDevice", "PUT", v3+"/sendToDevice/org.example.ping/d1", map[string]any{
		"messages": map[string]any{alice.UserID: map[string]any{alice.DeviceID: map[string]any{"n": 1}}},
	}, 200)
	r.do(alice, "pushrules", "GET", v3+"/pushrules/", nil, 200)
	r.do(carol, "leave", "POST", v3+"/rooms/"+esc(room)+"/leave", map[string]any{}, 200)
	r.do(carol, "logout", "POST", v3+"/logout", map[string]any{}, 200)

	if f := os.Getenv("ATOLL_TEST_SPEC_EXCHANGES"); f != "" {
		// Keep the exchanges for a look or a rerun of validate.mjs by hand.
		js, err := json.MarshalIndent(r.out, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if specDir == "" {
		t.Skipf("drove %d exchanges; ATOLL_TEST_MATRIX_SPEC_DIR is not set, so they were not validated against the "+
			"Client-Server OpenAPI definitions (the npm package @matrix-org/spec ships only sas-emoji.json; "+
			"see docs/testing.md)", len(r.out))
	}
	validateAgainstSpec(t, specDir, r.out)
}

// validateAgainstSpec runs testdata/openapi/validate.mjs once over the exchanges and fails the
// test with every mismatch it prints.
func validateAgainstSpec(t *testing.T, specDir string, xs []exchange) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(specDir, "data", "api", "client-server")); err != nil {
		t.Fatalf("ATOLL_TEST_MATRIX_SPEC_DIR=%s is not a matrix-spec checkout: %v", specDir, err)
	}
	mismatches, out, err := runValidator(t, specDir, xs)
	t.Logf("node validate.mjs:\n%s", out)
	for _, m := range mismatches {
		t.Error(m)
	}
	if err != nil && len(mismatches) == 0 {
		t.Fatalf("validate.mjs: %v", err)
	}
	if err == nil && !strings.Contains(out, fmt.Sprintf("\nvalidated %d exchanges:", len(xs))) {
		t.Fatalf("validate.mjs did not report validating all %d exchanges", len(xs))
	}
}

// runValidator runs validate.mjs over xs with the definitions in specDir and returns the
// MISMATCH lines (without the prefix), its whole output and its exit error.
func runValidator(t *testing.T, specDir string, xs []exchange) ([]string, string, error) {
	t.Helper()
	dir := nodeDeps(t, "testdata/openapi")
	js, err := json.Marshal(xs)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "exchanges.json")
	if err := os.WriteFile(file, js, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "validate.mjs", specDir, file)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err = cmd.Run()
	var mismatches []string
	for _, l := range strings.Split(out.String(), "\n") {
		if m, ok := strings.CutPrefix(l, "MISMATCH "); ok {
			mismatches = append(mismatches, m)
		}
	}
	return mismatches, out.String(), err
}

// testValidator checks validate.mjs itself against the fixture definitions in
// testdata/openapi/selftest, so that a broken validator cannot pass silently.
func testValidator(t *testing.T) {
	abs, err := filepath.Abs("testdata/openapi/selftest")
	if err != nil {
		t.Fatal(err)
	}
	const p = "/_matrix/client/v3/things/"
	x := func(label, path string, status int, body string) exchange {
		return exchange{Label: label, Method: "GET", Path: path, Status: status, Body: json.RawMessage(body)}
	}
	xs := []exchange{
		x("good", p+"t1", 200, `{"owner":"@a:example.org","count":2}`),
		x("wrong type", p+"t1", 200, `{"owner":"@a:example.org","count":"2"}`),
		x("missing required", p+"t1", 200, `{"count":2}`),
		x("bad format", p+"t1", 200, `{"owner":"alice"}`),
		x("literal path wins", p+"special", 200, `{"special":true}`),
		x("error via component", p+"t2", 404, `{"errcode":"M_NOT_FOUND","error":"no"}`),
		x("undocumented status", p+"t1", 403, `{"errcode":"M_FORBIDDEN"}`),
		x("unknown endpoint", "/_matrix/client/v3/nope", 404, `{"errcode":"M_UNRECOGNIZED"}`),
		x("unknown endpoint bad error", "/_matrix/client/v3/nope", 404, `{"error":"no errcode"}`),
		x("unknown endpoint ok", "/_matrix/client/v3/nope", 200, `{}`),
	}
	want := []string{"wrong type", "missing required", "bad format", "undocumented status", "unknown endpoint bad error"}
	mismatches, out, err := runValidator(t, abs, xs)
	if err == nil {
		t.Errorf("validate.mjs exited 0 with mismatches")
	}
	var got []string
	for _, m := range mismatches {
		got = append(got, m[:strings.IndexByte(m, ':')])
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("mismatches %q, want %q; output:\n%s", got, want, out)
	}
	if !strings.Contains(out, "\nvalidated 10 exchanges: 4 ok, 5 mismatched, 1 skipped") {
		t.Errorf("summary missing; output:\n%s", out)
	}
}

// signedKeys returns a keys/upload body with device keys and one signed one-time key for c's
// device, signed with a fresh ed25519 key as a client does.
func signedKeys(t testing.TB, c *shardtest.Client) map[string]any {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	curve := make([]byte, 32)
	otk := make([]byte, 32)
	_, _ = rand.Read(curve)
	_, _ = rand.Read(otk)
	b64 := base64.RawStdEncoding.EncodeToString
	keyID := gomatrixserverlib.KeyID("ed25519:" + c.DeviceID)
	sign := func(v map[string]any) map[string]any {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		signed, err := gomatrixserverlib.SignJSON(c.UserID, keyID, priv, raw)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		if err := json.Unmarshal(signed, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	device := sign(map[string]any{
		"user_id": c.UserID, "device_id": c.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]any{"curve25519:" + c.DeviceID: b64(curve), string(keyID): b64(pub)},
	})
	return map[string]any{
		"device_keys":   device,
		"one_time_keys": map[string]any{"signed_curve25519:AAAAHQ": sign(map[string]any{"key": b64(otk)})},
	}
}
