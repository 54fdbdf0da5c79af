package federation_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// e2eeDevice is a device's identity key, as a client would hold it.
type e2eeDevice struct {
	c    *shardtest.Client
	pub  string
	priv ed25519.PrivateKey
}

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

// signed returns obj signed by the device's ed25519 key.
func (d *e2eeDevice) signed(t *testing.T, obj map[string]any) map[string]any {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	raw, err = gomatrixserverlib.SignJSON(d.c.UserID, gomatrixserverlib.KeyID("ed25519:"+d.c.DeviceID), d.priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// uploadDeviceKeys uploads signed device keys and n signed one-time keys for c's device.
func uploadDeviceKeys(t *testing.T, c *shardtest.Client, n int) *e2eeDevice {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d := &e2eeDevice{c: c, pub: b64(pub), priv: priv}
	curve := make([]byte, 32)
	_, _ = rand.Read(curve)
	keys := d.signed(t, map[string]any{
		"user_id": c.UserID, "device_id": c.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + c.DeviceID: d.pub, "curve25519:" + c.DeviceID: b64(curve)},
	})
	otks := map[string]any{}
	for i := range n {
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		otks[fmt.Sprintf("signed_curve25519:AAAA%d", i)] = d.signed(t, map[string]any{"key": b64(k)})
	}
	resp := c.MustDo(t, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": keys, "one_time_keys": otks})
	if got := otkCount(t, resp); got != n {
		t.Fatalf("%s uploaded %d one-time keys, count %d", c.UserID, n, got)
	}
	return d
}

func otkCount(t *testing.T, uploadResp map[string]any) int {
	t.Helper()
	counts, _ := uploadResp["one_time_key_counts"].(map[string]any)
	n, _ := counts["signed_curve25519"].(float64)
	return int(n)
}

// queriedDevice returns the device keys of user/device in a keys/query answer, verifying
// the device's self-signature.
func queriedDevice(t *testing.T, resp map[string]any, user, device, wantPub string) {
	t.Helper()
	dk, _ := resp["device_keys"].(map[string]any)
	devs, _ := dk[user].(map[string]any)
	obj, ok := devs[device].(map[string]any)
	if !ok {
		t.Fatalf("keys/query has no device %s of %s: %v", device, user, resp)
	}
	raw, _ := json.Marshal(obj)
	pub, _ := base64.RawStdEncoding.DecodeString(wantPub)
	if err := gomatrixserverlib.VerifyJSON(user, gomatrixserverlib.KeyID("ed25519:"+device), ed25519.PublicKey(pub), raw); err != nil {
		t.Fatalf("device %s of %s does not verify after crossing servers: %v (%s)", device, user, err, raw)
	}
}

// syncUntil polls c's incremental sync from since until ok accepts a response.
func syncUntil(t *testing.T, c *shardtest.Client, since, what string, ok func(map[string]any) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last map[string]any
	for time.Now().Before(deadline) {
		st, body := c.Do(t, "GET", "/_matrix/client/v3/sync?timeout=2000&since="+url.QueryEscape(since), nil)
		if st != http.StatusOK {
			t.Fatalf("%s: sync %d %v", what, st, body)
		}
		if ok(body) {
			return
		}
		last = body
		since, _ = body["next_batch"].(string)
	}
	t.Fatalf("%s: not seen within 20s; last sync %v", what, last)
}

func changedHas(user string) func(map[string]any) bool {
	return func(sync map[string]any) bool {
		dl, _ := sync["device_lists"].(map[string]any)
		changed, _ := dl["changed"].([]any)
		return slices.Contains(changed, any(user))
	}
}

func toDeviceHas(sender, typ, field, value string) func(map[string]any) bool {
	return func(sync map[string]any) bool {
		td, _ := sync["to_device"].(map[string]any)
		evs, _ := td["events"].([]any)
		for _, e := range evs {
			ev, _ := e.(map[string]any)
			content, _ := ev["content"].(map[string]any)
			if ev["sender"] == sender && ev["type"] == typ && fmt.Sprint(content[field]) == value {
				return true
			}
		}
		return false
	}
}

// TestFederatedE2EE: users of three servers (two tenants on one shard, one on another) in one
// room exchange what end-to-end encryption needs over federation: device keys by keys/query,
// one-time keys by keys/claim, device list updates in /sync, and to-device messages.
func TestFederatedE2EE(t *testing.T) {
	s1 := shardtest.New(t)
	s2 := shardtest.New(t)
	a := s1.CreateTenant(t, "fe_a")
	b := s1.CreateTenant(t, "fe_b")
	c := s2.CreateTenant(t, "fe_c")
	alice := a.Register(t, "alice")
	bob := b.Register(t, "bob")
	carol := c.Register(t, "carol")
	t.Cleanup(func() {
		if t.Failed() {
			dumpFederation(t, s1, a, b)
		}
	})

	room := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "room_alias_name": "vault"})
	roomID := room["room_id"].(string)
	bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape("#vault:"+a.ServerName), map[string]any{})
	carol.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.ServerName), map[string]any{})
	waitFor(t, alice, "carol's join at alice", timelineHas(roomID, "m.room.member", "membership", "join"))

	aliceDev := uploadDeviceKeys(t, alice, 2)
	bobDev := uploadDeviceKeys(t, bob, 2)
	carolDev := uploadDeviceKeys(t, carol, 2)

	// keys/query across servers, both ways and across shards, signatures intact.
	q := alice.MustDo(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob.UserID: []string{}, carol.UserID: []string{}}})
	if f, _ := q["failures"].(map[string]any); len(f) != 0 {
		t.Fatalf("keys/query failures: %v", f)
	}
	queriedDevice(t, q, bob.UserID, bob.DeviceID, bobDev.pub)
	queriedDevice(t, q, carol.UserID, carol.DeviceID, carolDev.pub)
	q = carol.MustDo(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.UserID: []string{alice.DeviceID}}})
	queriedDevice(t, q, alice.UserID, alice.DeviceID, aliceDev.pub)

	// An unreachable server is a failure, not an error.
	q = alice.MustDo(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{"@x:unreachable.invalid": []string{}}, "timeout": 3000})
	if f, _ := q["failures"].(map[string]any); f["unreachable.invalid"] == nil {
		t.Fatalf("unreachable server not in failures: %v", q)
	}

	// keys/claim across servers takes one of bob's one-time keys.
	cl := alice.MustDo(t, "POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{
		bob.UserID: map[string]string{bob.DeviceID: "signed_curve25519"}, carol.UserID: map[string]string{carol.DeviceID: "signed_curve25519"}}})
	otks, _ := cl["one_time_keys"].(map[string]any)
	for _, u := range []*shardtest.Client{bob, carol} {
		devs, _ := otks[u.UserID].(map[string]any)
		keys, _ := devs[u.DeviceID].(map[string]any)
		if len(keys) != 1 {
			t.Fatalf("keys/claim for %s = %v", u.UserID, cl)
		}
		for id, k := range keys {
			raw, _ := json.Marshal(k)
			pub := bobDev.pub
			if u == carol {
				pub = carolDev.pub
			}
			pk, _ := base64.RawStdEncoding.DecodeString(pub)
			if err := gomatrixserverlib.VerifyJSON(u.UserID, gomatrixserverlib.KeyID("ed25519:"+u.DeviceID), ed25519.PublicKey(pk), raw); err != nil {
				t.Fatalf("claimed key %s of %s does not verify: %v", id, u.UserID, err)
			}
		}
		if n := otkCount(t, u.MustDo(t, "POST", "/_matrix/client/v3/keys/upload", map[string]any{})); n != 1 {
			t.Fatalf("%s has %d one-time keys after one claim, want 1", u.UserID, n)
		}
	}

	// A new device of bob reaches alice's /sync device_lists and keys/changes.
	since := alice.MustDo(t, "GET", "/_matrix/client/v3/sync", nil)["next_batch"].(string)
	carolBefore := carol.MustDo(t, "GET", "/_matrix/client/v3/sync", nil)["next_batch"].(string)
	bob2 := bob.Login(t, "BOBPHONE")
	bob2Dev := uploadDeviceKeys(t, bob2, 1)
	syncUntil(t, alice, since, "bob's new device at alice", changedHas(bob.UserID))
	ch := alice.MustDo(t, "GET", "/_matrix/client/v3/keys/changes?from="+url.QueryEscape(since), nil)
	if changed, _ := ch["changed"].([]any); !slices.Contains(changed, any(bob.UserID)) {
		t.Fatalf("keys/changes = %v, want %s", ch, bob.UserID)
	}
	q = alice.MustDo(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob.UserID: []string{}}})
	queriedDevice(t, q, bob.UserID, "BOBPHONE", bob2Dev.pub)
	queriedDevice(t, q, bob.UserID, bob.DeviceID, bobDev.pub)
	// Carol, on the other shard, hears of it too.
	syncUntil(t, carol, carolBefore, "bob's new device at carol", changedHas(bob.UserID))

	// A new cross-signing key of bob (m.signing_key_update) reaches alice and carol too.
	since = alice.MustDo(t, "GET", "/_matrix/client/v3/sync", nil)["next_batch"].(string)
	carolBefore = carol.MustDo(t, "GET", "/_matrix/client/v3/sync", nil)["next_batch"].(string)
	mpub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	master := map[string]any{"user_id": bob.UserID, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + b64(mpub): b64(mpub)}}
	bob.MustDo(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"master_key": master})
	syncUntil(t, alice, since, "bob's master key at alice", changedHas(bob.UserID))
	syncUntil(t, carol, carolBefore, "bob's master key at carol", changedHas(bob.UserID))
	q = carol.MustDo(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob.UserID: []string{}}})
	mk, _ := q["master_keys"].(map[string]any)
	if got, _ := mk[bob.UserID].(map[string]any); got == nil || fmt.Sprint(got["keys"]) != fmt.Sprint(master["keys"]) {
		t.Fatalf("carol's keys/query master key of bob = %v, want %v", mk[bob.UserID], master["keys"])
	}

	// To-device messages cross servers: to one device of bob, to every device of carol.
	bobSince := bob.MustDo(t, "GET", "/_matrix/client/v3/sync", nil)["next_batch"].(string)
	carolSince := carol.MustDo(t, "GET", "/_matrix/client/v3/sync", nil)["next_batch"].(string)
	alice.MustDo(t, "PUT", "/_matrix/client/v3/sendToDevice/m.room_key_request/txn1", map[string]any{"messages": map[string]any{
		bob.UserID:   map[string]any{bob.DeviceID: map[string]any{"body": "for bob"}},
		carol.UserID: map[string]any{"*": map[string]any{"body": "for carol"}},
	}})
	syncUntil(t, bob, bobSince, "alice's to-device message at bob", toDeviceHas(alice.UserID, "m.room_key_request", "body", "for bob"))
	syncUntil(t, carol, carolSince, "alice's to-device message at carol", toDeviceHas(alice.UserID, "m.room_key_request", "body", "for carol"))
	// bob's other device got nothing: the message named one device.
	st, body := bob2.Do(t, "GET", "/_matrix/client/v3/sync", nil)
	if st != http.StatusOK || toDeviceHas(alice.UserID, "m.room_key_request", "body", "for bob")(body) {
		t.Fatalf("bob's second device got a message for the first: %d %v", st, body["to_device"])
	}
}
