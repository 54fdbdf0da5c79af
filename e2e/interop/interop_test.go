package interop

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// seenTimeout bounds how long a step waits for an event to reach the other server.
const seenTimeout = 45 * time.Second

var env struct {
	dendrite, atoll *server
	ca              *x509.CertPool
	results         string
	dendriteVersion string
	atollRevision   string
}

var rep report

func TestMain(m *testing.M) {
	if os.Getenv("ATOLL_INTEROP") != "1" {
		fmt.Println("interop: skipped; run `make interop` (scripts/interop.sh), which sets ATOLL_INTEROP=1")
		os.Exit(0)
	}
	need := func(k string) string {
		v := os.Getenv(k)
		if v == "" {
			fmt.Fprintf(os.Stderr, "interop: %s is not set\n", k)
			os.Exit(2)
		}
		return v
	}
	env.dendrite = &server{label: "Dendrite", base: need("ATOLL_INTEROP_DENDRITE_URL"), name: need("ATOLL_INTEROP_DENDRITE_SERVER")}
	env.atoll = &server{label: "Atoll", base: need("ATOLL_INTEROP_ATOLL_URL"), name: need("ATOLL_INTEROP_ATOLL_SERVER")}
	env.atoll.host = env.atoll.name // the tenant is chosen by Host, as behind an ingress
	env.results = os.Getenv("ATOLL_INTEROP_RESULTS")
	env.dendriteVersion = os.Getenv("ATOLL_INTEROP_DENDRITE_VERSION")
	env.atollRevision = os.Getenv("ATOLL_INTEROP_ATOLL_REVISION")
	pem, err := os.ReadFile(need("ATOLL_INTEROP_CA"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		os.Exit(2)
	}
	env.ca = x509.NewCertPool()
	env.ca.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 60 * time.Second}
	env.dendrite.http, env.atoll.http = hc, hc
	code := m.Run()
	if env.results != "" {
		if err := os.WriteFile(env.results, []byte(rep.markdown()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "interop: write results:", err)
			code = 1
		}
	}
	fmt.Print(rep.markdown())
	os.Exit(code)
}

// TestInterop runs the scenario as ordered steps; a step whose prerequisite failed is skipped
// and reported as such.
func TestInterop(t *testing.T) {
	d, a := env.dendrite, env.atoll
	var alice, bob *user // alice on Dendrite, bob on the Atoll tenant
	var dRoom, aRoom string

	step(t, "tls: Dendrite's federation listener answers /_matrix/federation/v1/version", nil, func() (string, error) {
		return federationVersion(d.name)
	})
	step(t, "tls: Atoll's federation listener answers /_matrix/federation/v1/version", nil, func() (string, error) {
		return federationVersion(a.name)
	})
	step(t, "keys: Dendrite fetches the Atoll tenant's signing key (Dendrite's POST /_matrix/key/v2/query)", nil, func() (string, error) {
		return notaryQuery(d.name, a.name)
	})
	step(t, "keys: Atoll fetches Dendrite's signing key (Atoll's POST /_matrix/key/v2/query)", nil, func() (string, error) {
		return notaryQuery(a.name, d.name)
	})
	step(t, "register: a user on Dendrite", nil, func() (string, error) {
		var err error
		alice, err = d.register("alice")
		if err != nil {
			return "", err
		}
		return alice.id, nil
	})
	step(t, "register: a user on the Atoll tenant", nil, func() (string, error) {
		var err error
		bob, err = a.register("bob")
		if err != nil {
			return "", err
		}
		return bob.id, nil
	})
	users := []string{"register: a user on Dendrite", "register: a user on the Atoll tenant"}

	step(t, "profile: Atoll reads the Dendrite user's profile over federation", users, func() (string, error) {
		return profileOf(bob, alice.id)
	})
	step(t, "profile: Dendrite reads the Atoll user's profile over federation", users, func() (string, error) {
		return profileOf(alice, bob.id)
	})

	// A room on Dendrite joined from Atoll.
	const dCreate = "dendrite room: the Dendrite user creates a public room"
	step(t, dCreate, users, func() (string, error) {
		var err error
		dRoom, err = alice.createRoom("interop-d", "Dendrite room")
		return dRoom, err
	})
	step(t, "dendrite room: Atoll resolves its alias over federation", []string{dCreate}, func() (string, error) {
		return resolveAlias(bob, "#interop-d:"+d.name, dRoom)
	})
	const dJoin = "dendrite room: the Atoll user joins by room ID (server_name=Dendrite)"
	var dEarly string
	step(t, dJoin, []string{dCreate}, func() (string, error) {
		dEarly = fmt.Sprintf("before Atoll joined (%d)", time.Now().UnixNano()%100000)
		if _, err := alice.send(dRoom, dEarly); err != nil {
			return "", fmt.Errorf("a message before the join: %w", err)
		}
		return bob.join(dRoom, d.name)
	})
	step(t, "dendrite room: the Dendrite user sees the Atoll user's join", []string{dJoin}, func() (string, error) {
		return alice.waitFor(dRoom, "join of "+bob.id, isMember(bob.id, "join"))
	})
	step(t, "dendrite room: message Dendrite -> Atoll seen in the Atoll user's /sync", []string{dJoin}, func() (string, error) {
		return roundTrip(alice, bob, dRoom, "hello from Dendrite")
	})
	step(t, "dendrite room: message Atoll -> Dendrite seen in the Dendrite user's /sync", []string{dJoin}, func() (string, error) {
		return roundTrip(bob, alice, dRoom, "hello from Atoll")
	})
	step(t, "dendrite room: a topic set on Dendrite reaches Atoll", []string{dJoin}, func() (string, error) {
		return stateRoundTrip(alice, bob, dRoom, "m.room.topic", map[string]any{"topic": "set on Dendrite"}, "topic")
	})
	step(t, "dendrite room: history from before the join is readable on Atoll (/messages, backfill)", []string{dJoin}, func() (string, error) {
		return inHistory(bob, dRoom, dEarly)
	})
	step(t, "dendrite room: typing Dendrite -> Atoll (m.typing EDU)", []string{dJoin}, func() (string, error) {
		return typingRoundTrip(alice, bob, dRoom)
	})
	step(t, "dendrite room: typing Atoll -> Dendrite (m.typing EDU)", []string{dJoin}, func() (string, error) {
		return typingRoundTrip(bob, alice, dRoom)
	})
	step(t, "dendrite room: read receipt Atoll -> Dendrite (m.receipt EDU)", []string{dJoin}, func() (string, error) {
		return receiptRoundTrip(bob, alice, dRoom)
	})
	step(t, "dendrite room: read receipt Dendrite -> Atoll (m.receipt EDU)", []string{dJoin}, func() (string, error) {
		return receiptRoundTrip(alice, bob, dRoom)
	})

	// A room on Atoll joined from Dendrite.
	const aCreate = "atoll room: the Atoll user creates a public room"
	step(t, aCreate, users, func() (string, error) {
		var err error
		aRoom, err = bob.createRoom("interop-a", "Atoll room")
		return aRoom, err
	})
	step(t, "atoll room: Dendrite resolves its alias over federation", []string{aCreate}, func() (string, error) {
		return resolveAlias(alice, "#interop-a:"+a.name, aRoom)
	})
	const aJoin = "atoll room: the Dendrite user joins through the alias"
	var aEarly string
	step(t, aJoin, []string{aCreate}, func() (string, error) {
		aEarly = fmt.Sprintf("before Dendrite joined (%d)", time.Now().UnixNano()%100000)
		if _, err := bob.send(aRoom, aEarly); err != nil {
			return "", fmt.Errorf("a message before the join: %w", err)
		}
		return alice.join("#interop-a:"+a.name, "")
	})
	step(t, "atoll room: the Atoll user sees the Dendrite user's join", []string{aJoin}, func() (string, error) {
		return bob.waitFor(aRoom, "join of "+alice.id, isMember(alice.id, "join"))
	})
	step(t, "atoll room: message Atoll -> Dendrite seen in the Dendrite user's /sync", []string{aJoin}, func() (string, error) {
		return roundTrip(bob, alice, aRoom, "welcome from Atoll")
	})
	step(t, "atoll room: message Dendrite -> Atoll seen in the Atoll user's /sync", []string{aJoin}, func() (string, error) {
		return roundTrip(alice, bob, aRoom, "thanks from Dendrite")
	})
	step(t, "atoll room: a topic set on Atoll reaches Dendrite", []string{aJoin}, func() (string, error) {
		return stateRoundTrip(bob, alice, aRoom, "m.room.topic", map[string]any{"topic": "set on Atoll"}, "topic")
	})
	step(t, "atoll room: history from before the join is readable on Dendrite (/messages)", []string{aJoin}, func() (string, error) {
		return inHistory(alice, aRoom, aEarly)
	})

	// End-to-end encryption needs device keys to cross: each user uploads signed device keys
	// and asks its own server for the other's (federation user/keys/query).
	const keysUp = "e2ee: both users upload signed device keys"
	step(t, keysUp, users, func() (string, error) {
		for _, u := range []*user{alice, bob} {
			if err := u.uploadDeviceKeys(); err != nil {
				return "", err
			}
		}
		return "ed25519 and curve25519 keys of " + alice.deviceID + " and " + bob.deviceID, nil
	})
	step(t, "e2ee: Atoll returns the Dendrite user's device keys (keys/query over federation)", []string{keysUp}, func() (string, error) {
		return queryDeviceKeys(bob, alice)
	})
	step(t, "e2ee: Dendrite returns the Atoll user's device keys (keys/query over federation)", []string{keysUp}, func() (string, error) {
		return queryDeviceKeys(alice, bob)
	})

	// Invites into private rooms, both ways.
	step(t, "invite: the Atoll user invites the Dendrite user into a private room; accepted; message", users, func() (string, error) {
		return inviteFlow(bob, alice, "private room on Atoll")
	})
	step(t, "invite: the Dendrite user invites the Atoll user into a private room; accepted; message", users, func() (string, error) {
		return inviteFlow(alice, bob, "private room on Dendrite")
	})

	// Leaving.
	step(t, "leave: the Dendrite user leaves the Atoll room; the Atoll user sees it", []string{aJoin}, func() (string, error) {
		if _, err := alice.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(aRoom)+"/leave", map[string]any{}); err != nil {
			return "", err
		}
		return bob.waitFor(aRoom, "leave of "+alice.id, isMember(alice.id, "leave"))
	})
	step(t, "leave: the Atoll user leaves the Dendrite room; the Dendrite user sees it", []string{dJoin}, func() (string, error) {
		if _, err := bob.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(dRoom)+"/leave", map[string]any{}); err != nil {
			return "", err
		}
		return alice.waitFor(dRoom, "leave of "+bob.id, isMember(bob.id, "leave"))
	})
	const rejoin = "rejoin: the Atoll user joins the Dendrite room again, through its alias"
	step(t, rejoin, []string{"leave: the Atoll user leaves the Dendrite room; the Dendrite user sees it"}, func() (string, error) {
		if _, err := bob.join("#interop-d:"+d.name, ""); err != nil {
			return "", err
		}
		return alice.waitFor(dRoom, "second join of "+bob.id, func(ev map[string]any) bool {
			c, _ := ev["content"].(map[string]any)
			u, _ := ev["unsigned"].(map[string]any)
			prev, _ := u["prev_content"].(map[string]any)
			return isMember(bob.id, "join")(ev) && prev["membership"] == "leave" && c["membership"] == "join"
		})
	})
	step(t, "rejoin: message Dendrite -> Atoll after the rejoin", []string{rejoin}, func() (string, error) {
		return roundTrip(alice, bob, dRoom, "welcome back")
	})
}

// step runs fn as a subtest unless a step it needs did not pass, and records the outcome.
func step(t *testing.T, name string, needs []string, fn func() (string, error)) {
	t.Helper()
	for _, n := range needs {
		if rep.outcome(n) != pass {
			rep.add(name, skip, "needs: "+n)
			t.Run(name, func(t *testing.T) { t.Skipf("needs %q", n) })
			return
		}
	}
	t.Run(name, func(t *testing.T) {
		start := time.Now()
		detail, err := fn()
		took := time.Since(start).Round(10 * time.Millisecond)
		if err != nil {
			rep.add(name, fail, err.Error())
			t.Error(err)
			return
		}
		rep.add(name, pass, fmt.Sprintf("%s (%s)", detail, took))
		t.Log(detail)
	})
}

type outcome string

const (
	pass outcome = "works"
	fail outcome = "FAILS"
	skip outcome = "not run"
)

type report struct {
	mu   sync.Mutex
	rows []row
}

type row struct {
	name    string
	outcome outcome
	detail  string
}

func (r *report) add(name string, o outcome, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows = append(r.rows, row{name, o, detail})
}

func (r *report) outcome(name string) outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.rows {
		if x.name == name {
			return x.outcome
		}
	}
	return skip
}

func (r *report) markdown() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	counts := map[outcome]int{}
	for _, x := range r.rows {
		counts[x.outcome]++
	}
	fmt.Fprintf(&b, "# Interoperability with Dendrite: results\n\n")
	fmt.Fprintf(&b, "Written by `make interop` (scripts/interop.sh, e2e/interop) on %s.\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Dendrite %s (server name `%s`) and Atoll %s (tenant `%s`), federating over TLS on loopback.\n\n",
		orUnknown(env.dendriteVersion), env.dendrite.name, orUnknown(env.atollRevision), env.atoll.name)
	fmt.Fprintf(&b, "%d steps work, %d fail, %d were not run.\n\n", counts[pass], counts[fail], counts[skip])
	fmt.Fprintf(&b, "| step | result | detail |\n|---|---|---|\n")
	for _, x := range r.rows {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", cell(x.name), x.outcome, cell(x.detail))
	}
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return s
}

// server is one homeserver's client API.
type server struct {
	label string
	base  string // client API base URL
	host  string // Host header, when the URL's host is not the server's name
	name  string // Matrix server name
	http  *http.Client
}

// user is a logged-in device and everything its /sync has shown so far.
type user struct {
	srv   *server
	id    string
	token string

	since     string
	deviceID  string
	events    map[string][]map[string]any // room ID -> timeline and state events seen
	ephemeral map[string][]map[string]any // room ID -> typing and receipt events seen
	invite    map[string]bool             // rooms with a pending invite
}

func (s *server) call(method, path, token string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if s.host != "" {
		req.Host = s.host
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s %s: %w", s.label, method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s %s: read: %w", s.label, method, path, err)
	}
	var out map[string]any
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			return resp.StatusCode, nil, fmt.Errorf("%s %s %s: %d, not JSON: %.300q", s.label, method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, out, nil
}

func (s *server) register(localpart string) (*user, error) {
	body := map[string]any{"username": localpart, "password": "interop-password-" + localpart, "auth": map[string]any{"type": "m.login.dummy"}}
	st, out, err := s.call("POST", "/_matrix/client/v3/register", "", body)
	if err != nil {
		return nil, err
	}
	if st == http.StatusUnauthorized && out["session"] != nil {
		// User-interactive auth: repeat with the session.
		body["auth"] = map[string]any{"type": "m.login.dummy", "session": out["session"]}
		if st, out, err = s.call("POST", "/_matrix/client/v3/register", "", body); err != nil {
			return nil, err
		}
	}
	if st != http.StatusOK {
		return nil, fmt.Errorf("%s register %s: %d %v", s.label, localpart, st, out)
	}
	u := &user{srv: s, id: str(out["user_id"]), token: str(out["access_token"]), deviceID: str(out["device_id"]),
		events: map[string][]map[string]any{}, ephemeral: map[string][]map[string]any{}, invite: map[string]bool{}}
	if _, err := u.sync(0); err != nil { // the first token; every later sync is incremental
		return nil, err
	}
	return u, nil
}

// must calls the client API as u and fails on any status but 200.
func (u *user) must(method, path string, body any) (map[string]any, error) {
	st, out, err := u.srv.call(method, path, u.token, body)
	if err != nil {
		return nil, err
	}
	if st != http.StatusOK {
		return nil, fmt.Errorf("%s %s %s as %s: %d %v", u.srv.label, method, path, u.id, st, out)
	}
	return out, nil
}

func (u *user) createRoom(alias, name string) (string, error) {
	out, err := u.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": alias, "name": name})
	if err != nil {
		return "", err
	}
	return str(out["room_id"]), nil
}

func (u *user) join(roomOrAlias, via string) (string, error) {
	path := "/_matrix/client/v3/join/" + url.PathEscape(roomOrAlias)
	if via != "" {
		path += "?server_name=" + url.QueryEscape(via)
	}
	out, err := u.must("POST", path, map[string]any{})
	if err != nil {
		return "", err
	}
	return "joined " + str(out["room_id"]), nil
}

func (u *user) send(roomID, body string) (string, error) {
	txn := fmt.Sprintf("interop-%d", time.Now().UnixNano())
	out, err := u.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+txn,
		map[string]any{"msgtype": "m.text", "body": body})
	if err != nil {
		return "", err
	}
	return str(out["event_id"]), nil
}

// sync runs one /sync and files what it shows.
func (u *user) sync(timeoutMS int) (map[string]any, error) {
	path := fmt.Sprintf("/_matrix/client/v3/sync?timeout=%d", timeoutMS)
	if u.since != "" {
		path += "&since=" + url.QueryEscape(u.since)
	}
	out, err := u.must("GET", path, nil)
	if err != nil {
		return nil, err
	}
	u.since = str(out["next_batch"])
	rooms, _ := out["rooms"].(map[string]any)
	for _, section := range []string{"join", "leave"} {
		sec, _ := rooms[section].(map[string]any)
		for roomID, r := range sec {
			room, _ := r.(map[string]any)
			for _, part := range []string{"state", "timeline", "ephemeral"} {
				p, _ := room[part].(map[string]any)
				evs, _ := p["events"].([]any)
				for _, e := range evs {
					ev, ok := e.(map[string]any)
					switch {
					case !ok:
					case part == "ephemeral":
						u.ephemeral[roomID] = append(u.ephemeral[roomID], ev)
					default:
						u.events[roomID] = append(u.events[roomID], ev)
					}
				}
			}
		}
	}
	if inv, ok := rooms["invite"].(map[string]any); ok {
		for roomID := range inv {
			u.invite[roomID] = true
		}
	}
	return out, nil
}

// waitFor syncs until a state or timeline event of roomID satisfies ok.
func (u *user) waitFor(roomID, what string, ok func(ev map[string]any) bool) (string, error) {
	return u.waitIn(u.events, roomID, what, ok)
}

// waitForEphemeral syncs until an ephemeral event (typing, receipt) of roomID satisfies ok.
func (u *user) waitForEphemeral(roomID, what string, ok func(ev map[string]any) bool) (string, error) {
	return u.waitIn(u.ephemeral, roomID, what, ok)
}

func (u *user) waitIn(seen map[string][]map[string]any, roomID, what string, ok func(ev map[string]any) bool) (string, error) {
	start := time.Now()
	for {
		for _, ev := range seen[roomID] {
			if ok(ev) {
				return fmt.Sprintf("%s seen by %s after %s", what, u.id, time.Since(start).Round(10*time.Millisecond)), nil
			}
		}
		if time.Since(start) > seenTimeout {
			return "", fmt.Errorf("%s not in %s's /sync of %s on %s within %s; %s", what, u.id, roomID, u.srv.label, seenTimeout, u.history(roomID))
		}
		if _, err := u.sync(2000); err != nil {
			return "", err
		}
	}
}

// history summarises the room as u's server shows it, for failure reports.
func (u *user) history(roomID string) string {
	st, out, err := u.srv.call("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=15", u.token, nil)
	if err != nil {
		return "messages: " + err.Error()
	}
	if st != http.StatusOK {
		return fmt.Sprintf("messages: %d %v", st, out)
	}
	var evs []string
	chunk, _ := out["chunk"].([]any)
	for _, e := range chunk {
		ev, _ := e.(map[string]any)
		c, _ := ev["content"].(map[string]any)
		d := str(ev["type"]) + " from " + str(ev["sender"])
		if b := str(c["body"]); b != "" {
			d += " " + fmt.Sprintf("%q", b)
		}
		if m := str(c["membership"]); m != "" {
			d += " " + m + " " + str(ev["state_key"])
		}
		evs = append(evs, d)
	}
	return fmt.Sprintf("its /messages (newest first): [%s]", strings.Join(evs, "; "))
}

func isMember(userID, membership string) func(map[string]any) bool {
	return func(ev map[string]any) bool {
		c, _ := ev["content"].(map[string]any)
		return ev["type"] == "m.room.member" && ev["state_key"] == userID && c["membership"] == membership
	}
}

func hasBody(body string) func(map[string]any) bool {
	return func(ev map[string]any) bool {
		c, _ := ev["content"].(map[string]any)
		return ev["type"] == "m.room.message" && c["body"] == body
	}
}

// roundTrip sends a message as from and waits for it in to's /sync.
func roundTrip(from, to *user, roomID, body string) (string, error) {
	body = fmt.Sprintf("%s (%d)", body, time.Now().UnixNano()%100000)
	id, err := from.send(roomID, body)
	if err != nil {
		return "", err
	}
	seen, err := to.waitFor(roomID, "event "+id, hasBody(body))
	if err != nil {
		return "", err
	}
	return seen, nil
}

// stateRoundTrip sets a state event as from and waits for it in to's /sync.
func stateRoundTrip(from, to *user, roomID, evType string, content map[string]any, field string) (string, error) {
	if _, err := from.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/"+evType, content); err != nil {
		return "", err
	}
	return to.waitFor(roomID, evType, func(ev map[string]any) bool {
		c, _ := ev["content"].(map[string]any)
		return ev["type"] == evType && c[field] == content[field]
	})
}

func inviteFlow(inviter, invitee *user, name string) (string, error) {
	out, err := inviter.must("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": name})
	if err != nil {
		return "", err
	}
	roomID := str(out["room_id"])
	if _, err := inviter.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/invite", map[string]any{"user_id": invitee.id}); err != nil {
		return "", err
	}
	start := time.Now()
	for !invitee.invite[roomID] {
		if time.Since(start) > seenTimeout {
			return "", fmt.Errorf("the invite to %s is not in %s's /sync on %s within %s", roomID, invitee.id, invitee.srv.label, seenTimeout)
		}
		if _, err := invitee.sync(2000); err != nil {
			return "", err
		}
	}
	if _, err := invitee.join(roomID, inviter.srv.name); err != nil {
		return "", fmt.Errorf("invite received, accepting it: %w", err)
	}
	if _, err := inviter.waitFor(roomID, "join of "+invitee.id, isMember(invitee.id, "join")); err != nil {
		return "", fmt.Errorf("invite accepted: %w", err)
	}
	if _, err := roundTrip(invitee, inviter, roomID, "in "+name); err != nil {
		return "", fmt.Errorf("invite accepted, join seen: %w", err)
	}
	return fmt.Sprintf("%s: invite, join and a message in %s", roomID, time.Since(start).Round(10*time.Millisecond)), nil
}

func resolveAlias(u *user, alias, want string) (string, error) {
	out, err := u.must("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), nil)
	if err != nil {
		return "", err
	}
	if got := str(out["room_id"]); got != want {
		return "", fmt.Errorf("%s resolves %s to %q, want %s", u.srv.label, alias, got, want)
	}
	return fmt.Sprintf("%s -> %s, servers %v", alias, want, out["servers"]), nil
}

func profileOf(u *user, userID string) (string, error) {
	st, out, err := u.srv.call("GET", "/_matrix/client/v3/profile/"+url.PathEscape(userID), u.token, nil)
	if err != nil {
		return "", err
	}
	if st != http.StatusOK {
		return "", fmt.Errorf("%s GET profile of %s: %d %v", u.srv.label, userID, st, out)
	}
	return fmt.Sprintf("%v", out), nil
}

// tlsClient trusts only the run's CA and verifies the server as "localhost".
func tlsClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: env.ca, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}}
}

// federationVersion calls GET /_matrix/federation/v1/version at https://<server name>,
// verifying its certificate against the CA, with the server name as Host.
func federationVersion(serverName string) (string, error) {
	resp, err := tlsClient().Get("https://" + serverName + "/_matrix/federation/v1/version")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%d %.300s", resp.StatusCode, b)
	}
	return fmt.Sprintf("%s %s", resp.Proto, strings.TrimSpace(string(b))), nil
}

// notaryQuery asks server (unauthenticated, as any server may) for origin's keys: the answer
// is only there if server could fetch them from origin over federation.
func notaryQuery(server, origin string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body, _ := json.Marshal(map[string]any{"server_keys": map[string]any{origin: map[string]any{}}})
	req, err := http.NewRequestWithContext(ctx, "POST", "https://"+server+"/_matrix/key/v2/query", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := tlsClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%d %.300s", resp.StatusCode, b)
	}
	var out struct {
		ServerKeys []struct {
			ServerName string         `json:"server_name"`
			VerifyKeys map[string]any `json:"verify_keys"`
			Signatures map[string]any `json:"signatures"`
		} `json:"server_keys"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "", fmt.Errorf("not a key query response: %w: %.300s", err, b)
	}
	for _, k := range out.ServerKeys {
		if k.ServerName == origin && len(k.VerifyKeys) > 0 {
			var ids, signers []string
			for id := range k.VerifyKeys {
				ids = append(ids, id)
			}
			for s := range k.Signatures {
				signers = append(signers, s)
			}
			return fmt.Sprintf("keys %v of %s, signed by %v", ids, origin, signers), nil
		}
	}
	return "", errors.New("no keys of " + origin + " in the answer: " + strings.TrimSpace(string(b)))
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// inHistory pages u's /messages of roomID backwards until body appears.
func inHistory(u *user, roomID, body string) (string, error) {
	from := ""
	var seen []string
	for page := 0; page < 5; page++ {
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/messages?dir=b&limit=20"
		if from != "" {
			path += "&from=" + url.QueryEscape(from)
		}
		out, err := u.must("GET", path, nil)
		if err != nil {
			return "", err
		}
		chunk, _ := out["chunk"].([]any)
		for _, e := range chunk {
			ev, _ := e.(map[string]any)
			if hasBody(body)(ev) {
				return fmt.Sprintf("%q found on page %d of %s's /messages", body, page+1, u.srv.label), nil
			}
			seen = append(seen, str(ev["type"]))
		}
		from = str(out["end"])
		if from == "" || len(chunk) == 0 {
			break
		}
	}
	return "", fmt.Errorf("%q not in %s's /messages of %s (saw %v)", body, u.srv.label, roomID, seen)
}

func typingRoundTrip(from, to *user, roomID string) (string, error) {
	if _, err := from.must("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/typing/"+url.PathEscape(from.id),
		map[string]any{"typing": true, "timeout": 20000}); err != nil {
		return "", err
	}
	return to.waitForEphemeral(roomID, "typing of "+from.id, func(ev map[string]any) bool {
		c, _ := ev["content"].(map[string]any)
		ids, _ := c["user_ids"].([]any)
		for _, id := range ids {
			if id == from.id {
				return ev["type"] == "m.typing"
			}
		}
		return false
	})
}

func receiptRoundTrip(from, to *user, roomID string) (string, error) {
	// The receipt is for the newest message from's server shows.
	out, err := from.must("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=10", nil)
	if err != nil {
		return "", err
	}
	var eventID string
	chunk, _ := out["chunk"].([]any)
	for _, e := range chunk {
		ev, _ := e.(map[string]any)
		if ev["type"] == "m.room.message" {
			eventID = str(ev["event_id"])
			break
		}
	}
	if eventID == "" {
		return "", errors.New("no message to acknowledge in " + from.srv.label + "'s /messages")
	}
	if _, err := from.must("POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/receipt/m.read/"+url.PathEscape(eventID), map[string]any{}); err != nil {
		return "", err
	}
	return to.waitForEphemeral(roomID, "read receipt of "+from.id+" for "+eventID, func(ev map[string]any) bool {
		c, _ := ev["content"].(map[string]any)
		byType, _ := c[eventID].(map[string]any)
		read, _ := byType["m.read"].(map[string]any)
		return ev["type"] == "m.receipt" && read[from.id] != nil
	})
}

// uploadDeviceKeys uploads a freshly generated, correctly signed set of device keys.
func (u *user) uploadDeviceKeys() error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	curve := make([]byte, 32)
	if _, err := rand.Read(curve); err != nil {
		return err
	}
	b64 := base64.RawStdEncoding.EncodeToString
	keys := map[string]any{
		"user_id": u.id, "device_id": u.deviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + u.deviceID: b64(pub), "curve25519:" + u.deviceID: b64(curve)},
	}
	// Canonical JSON of these values is what encoding/json writes: sorted keys, no spaces,
	// and no characters it would escape.
	canonical, err := json.Marshal(keys)
	if err != nil {
		return err
	}
	keys["signatures"] = map[string]any{u.id: map[string]string{"ed25519:" + u.deviceID: b64(ed25519.Sign(priv, canonical))}}
	_, err = u.must("POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": keys})
	return err
}

func queryDeviceKeys(u, of *user) (string, error) {
	out, err := u.must("POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{of.id: []string{}}, "timeout": 10000})
	if err != nil {
		return "", err
	}
	dk, _ := out["device_keys"].(map[string]any)
	devices, _ := dk[of.id].(map[string]any)
	dev, _ := devices[of.deviceID].(map[string]any)
	if dev == nil {
		return "", fmt.Errorf("%s has no device keys of %s's device %s: device_keys %v, failures %v", u.srv.label, of.id, of.deviceID, dk, out["failures"])
	}
	k, _ := dev["keys"].(map[string]any)
	return fmt.Sprintf("%s's device %s with %d keys", of.id, of.deviceID, len(k)), nil
}
