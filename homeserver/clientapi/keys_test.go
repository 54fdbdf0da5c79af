package clientapi_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// at walks nested JSON objects.
func at(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

// signObj signs a JSON object as signer with an ed25519 key and returns it decoded.
func signObj(t *testing.T, obj map[string]any, signer, keyID string, priv ed25519.PrivateKey) map[string]any {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := gomatrixserverlib.SignJSON(signer, gomatrixserverlib.KeyID(keyID), priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(signed, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func newKey(t *testing.T) (string, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return b64(pub), priv
}

// deviceKeys returns a client's self-signed device keys and its ed25519 private key.
func deviceKeys(t *testing.T, c *shardtest.Client) (map[string]any, ed25519.PrivateKey) {
	t.Helper()
	pub, priv := newKey(t)
	curve := make([]byte, 32)
	_, _ = rand.Read(curve)
	obj := map[string]any{
		"user_id": c.UserID, "device_id": c.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]any{"curve25519:" + c.DeviceID: b64(curve), "ed25519:" + c.DeviceID: pub},
	}
	return signObj(t, obj, c.UserID, "ed25519:"+c.DeviceID, priv), priv
}

// crossSigningKey returns a signed cross-signing key of a usage and its private key.
func crossSigningKey(t *testing.T, c *shardtest.Client, usage string, signerPub string, signer ed25519.PrivateKey) (map[string]any, string, ed25519.PrivateKey) {
	t.Helper()
	pub, priv := newKey(t)
	obj := map[string]any{"user_id": c.UserID, "usage": []string{usage}, "keys": map[string]any{"ed25519:" + pub: pub}}
	if signer != nil {
		obj = signObj(t, obj, c.UserID, "ed25519:"+signerPub, signer)
	}
	return obj, pub, priv
}

func otkCount(t *testing.T, c *shardtest.Client) float64 {
	t.Helper()
	body := c.MustDo(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil)
	n, _ := at(body, "device_one_time_keys_count", "signed_curve25519").(float64)
	return n
}

func wantErr(t *testing.T, what string, status int, body map[string]any, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus || body["errcode"] != wantCode {
		t.Fatalf("%s: got %d %v, want %d %s", what, status, body, wantStatus, wantCode)
	}
}

// TestKeysUploadQueryClaim uploads device, one-time and fallback keys, queries them from
// another user and claims until only the fallback key is left.
func TestKeysUploadQueryClaim(t *testing.T) {
	s := shardtest.New(t)
	tn := s.CreateTenant(t, "keys")
	alice := tn.Register(t, "alice")
	bob := tn.Register(t, "bob")

	dk, _ := deviceKeys(t, alice)
	resp := alice.MustDo(t, "POST", "/_matrix/client/v3/keys/upload", map[string]any{
		"device_keys": dk,
		"one_time_keys": map[string]any{
			"signed_curve25519:AAAA": map[string]any{"key": "otk1"},
			"signed_curve25519:AAAB": map[string]any{"key": "otk2"},
		},
		"fallback_keys": map[string]any{"signed_curve25519:FB1": map[string]any{"key": "fb", "fallback": true}},
	})
	if n := at(resp, "one_time_key_counts", "signed_curve25519"); n != float64(2) {
		t.Fatalf("upload counts = %v", resp)
	}
	// Uploading the same one-time key again is harmless; other content under its ID is not.
	alice.MustDo(t, "POST", "/_matrix/client/v3/keys/upload", map[string]any{
		"one_time_keys": map[string]any{"signed_curve25519:AAAA": map[string]any{"key": "otk1"}},
	})
	st, body := alice.Do(t, "POST", "/_matrix/client/v3/keys/upload", map[string]any{
		"one_time_keys": map[string]any{"signed_curve25519:AAAA": map[string]any{"key": "other"}},
	})
	wantErr(t, "conflicting one-time key", st, body, http.StatusBadRequest, "M_INVALID_PARAM")
	if n := otkCount(t, alice); n != 2 {
		t.Fatalf("sync one-time key count = %v, want 2", n)
	}

	q := bob.MustDo(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{
		"device_keys": map[string]any{alice.UserID: []string{}, "@nobody:elsewhere.test": []string{}},
	})
	got, _ := at(q, "device_keys", alice.UserID, alice.DeviceID).(map[string]any)
	if got == nil || at(got, "keys", "ed25519:"+alice.DeviceID) != at(dk, "keys", "ed25519:"+alice.DeviceID) {
		t.Fatalf("query device keys = %v", q)
	}
	if at(got, "signatures", alice.UserID, "ed25519:"+alice.DeviceID) == nil {
		t.Fatalf("queried keys lost their self-signature: %v", got)
	}
	if at(q, "failures", "elsewhere.test") == nil {
		t.Fatalf("remote user not in failures: %v", q)
	}

	claim := func() map[string]any {
		t.Helper()
		c := bob.MustDo(t, "POST", "/_matrix/client/v3/keys/claim", map[string]any{
			"one_time_keys": map[string]any{alice.UserID: map[string]any{alice.DeviceID: "signed_curve25519"}},
		})
		keys, _ := at(c, "one_time_keys", alice.UserID, alice.DeviceID).(map[string]any)
		return keys
	}
	seen := map[string]bool{}
	for want := 1.0; want >= 0; want-- {
		keys := claim()
		if len(keys) != 1 {
			t.Fatalf("claim = %v", keys)
		}
		for id := range keys {
			if seen[id] || id == "signed_curve25519:FB1" {
				t.Fatalf("claim returned %s again or too early", id)
			}
			seen[id] = true
		}
		if n := otkCount(t, alice); n != want {
			t.Fatalf("after claim, sync one-time key count = %v, want %v", n, want)
		}
	}
	// Out of one-time keys: the fallback key is handed out (again and again) and marked used.
	for range 2 {
		keys := claim()
		if _, ok := keys["signed_curve25519:FB1"]; !ok || len(keys) != 1 {
			t.Fatalf("claim without one-time keys = %v, want the fallback key", keys)
		}
	}
	syncBody := alice.MustDo(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil)
	if types, _ := syncBody["device_unused_fallback_key_types"].([]any); len(types) != 0 {
		t.Fatalf("used fallback key still listed unused: %v", syncBody["device_unused_fallback_key_types"])
	}
}

// TestKeysToDevice checks to-device messages arrive once, "*" reaches every device and a
// retried transaction is not delivered twice.
func TestKeysToDevice(t *testing.T) {
	s := shardtest.New(t)
	tn := s.CreateTenant(t, "todev")
	alice := tn.Register(t, "alice")
	bob := tn.Register(t, "bob")
	bob2 := bob.Login(t, "BOBTWO")

	since := bob.MustDo(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil)["next_batch"].(string)
	since2 := bob2.MustDo(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil)["next_batch"].(string)
	msg := map[string]any{"messages": map[string]any{bob.UserID: map[string]any{bob.DeviceID: map[string]any{"n": 1}}}}
	for range 2 { // the retry must not queue the message again
		alice.MustDo(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/txn1", msg)
	}
	toDevice := func(c *shardtest.Client, since *string) []any {
		t.Helper()
		body := c.MustDo(t, "GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(*since), nil)
		*since = body["next_batch"].(string)
		evs, _ := at(body, "to_device", "events").([]any)
		return evs
	}
	evs := toDevice(bob, &since)
	if len(evs) != 1 || at(evs[0].(map[string]any), "sender") != alice.UserID || at(evs[0].(map[string]any), "content", "n") != float64(1) {
		t.Fatalf("to-device events = %v", evs)
	}
	if evs := toDevice(bob, &since); len(evs) != 0 {
		t.Fatalf("to-device delivered again: %v", evs)
	}
	if evs := toDevice(bob2, &since2); len(evs) != 0 {
		t.Fatalf("message for another device reached %s: %v", bob2.DeviceID, evs)
	}

	alice.MustDo(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/txn2", map[string]any{
		"messages": map[string]any{bob.UserID: map[string]any{"*": map[string]any{"n": 2}}},
	})
	for _, c := range []struct {
		cl    *shardtest.Client
		since *string
	}{{bob, &since}, {bob2, &since2}} {
		if evs := toDevice(c.cl, c.since); len(evs) != 1 || at(evs[0].(map[string]any), "content", "n") != float64(2) {
			t.Fatalf("%s: wildcard to-device events = %v", c.cl.DeviceID, evs)
		}
	}
}

// TestKeysChangesAndDevices covers keys/changes after a new device and the devices API with
// its user-interactive auth.
func TestKeysChangesAndDevices(t *testing.T) {
	s := shardtest.New(t)
	tn := s.CreateTenant(t, "devs")
	alice := tn.Register(t, "alice")
	bob := tn.Register(t, "bob")
	roomID, _ := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": []string{bob.UserID}})["room_id"].(string)
	bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})

	from := alice.MustDo(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil)["next_batch"].(string)
	bob2 := bob.Login(t, "BOBTWO")
	dk, _ := deviceKeys(t, bob2)
	bob2.MustDo(t, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": dk})
	incr := alice.MustDo(t, "GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(from), nil)
	if changed, _ := at(incr, "device_lists", "changed").([]any); !slices.Contains(changed, any(bob.UserID)) {
		t.Fatalf("sync device_lists = %v, want %s changed", incr["device_lists"], bob.UserID)
	}
	to := incr["next_batch"].(string)
	ch := alice.MustDo(t, "GET", "/_matrix/client/v3/keys/changes?from="+url.QueryEscape(from)+"&to="+url.QueryEscape(to), nil)
	if changed, _ := ch["changed"].([]any); !slices.Contains(changed, any(bob.UserID)) {
		t.Fatalf("keys/changes = %v, want %s changed", ch, bob.UserID)
	}
	ch = alice.MustDo(t, "GET", "/_matrix/client/v3/keys/changes?from="+url.QueryEscape(to)+"&to="+url.QueryEscape(to), nil)
	if changed, _ := ch["changed"].([]any); len(changed) != 0 {
		t.Fatalf("keys/changes over an empty range = %v", ch)
	}

	list := bob.MustDo(t, "GET", "/_matrix/client/v3/devices", nil)
	if devs, _ := list["devices"].([]any); len(devs) != 2 {
		t.Fatalf("devices = %v", list)
	}
	bob.MustDo(t, "PUT", "/_matrix/client/v3/devices/BOBTWO", map[string]any{"display_name": "Phone"})
	if d := bob.MustDo(t, "GET", "/_matrix/client/v3/devices/BOBTWO", nil); d["display_name"] != "Phone" || d["device_id"] != "BOBTWO" {
		t.Fatalf("device = %v", d)
	}
	q := alice.MustDo(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob.UserID: []string{"BOBTWO"}}})
	if at(q, "device_keys", bob.UserID, "BOBTWO", "unsigned", "device_display_name") != "Phone" {
		t.Fatalf("query = %v, want the device's display name", q)
	}
	st, body := bob.Do(t, "GET", "/_matrix/client/v3/devices/NOPE", nil)
	wantErr(t, "unknown device", st, body, http.StatusNotFound, "M_NOT_FOUND")
	st, body = bob.Do(t, "PUT", "/_matrix/client/v3/devices/NOPE", map[string]any{"display_name": "x"})
	wantErr(t, "rename unknown device", st, body, http.StatusNotFound, "M_NOT_FOUND")

	// Deleting needs the password.
	st, body = bob.Do(t, "DELETE", "/_matrix/client/v3/devices/BOBTWO", map[string]any{})
	if st != http.StatusUnauthorized || body["session"] == nil || body["flows"] == nil {
		t.Fatalf("delete without auth: %d %v", st, body)
	}
	session := body["session"]
	st, body = bob.Do(t, "DELETE", "/_matrix/client/v3/devices/BOBTWO", map[string]any{
		"auth": map[string]any{"type": "m.login.password", "session": session, "identifier": map[string]any{"type": "m.id.user", "user": bob.UserID}, "password": "wrong"},
	})
	wantErr(t, "delete with a wrong password", st, body, http.StatusUnauthorized, "M_FORBIDDEN")
	bob.MustDo(t, "DELETE", "/_matrix/client/v3/devices/BOBTWO", map[string]any{
		"auth": map[string]any{"type": "m.login.password", "session": session, "identifier": map[string]any{"type": "m.id.user", "user": bob.UserID}, "password": bob.Password},
	})
	st, body = bob2.Do(t, "GET", "/_matrix/client/v3/account/whoami", nil)
	wantErr(t, "deleted device's token", st, body, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	q = alice.MustDo(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob.UserID: []string{}}})
	if devs, _ := at(q, "device_keys", bob.UserID).(map[string]any); len(devs) != 0 {
		t.Fatalf("deleted device's keys still queried: %v", q)
	}
	ch = alice.MustDo(t, "GET", "/_matrix/client/v3/keys/changes?from="+url.QueryEscape(to), nil)
	if changed, _ := ch["changed"].([]any); !slices.Contains(changed, any(bob.UserID)) {
		t.Fatalf("keys/changes after delete = %v", ch)
	}

	bob3 := bob.Login(t, "BOBTHREE")
	st, _ = bob.Do(t, "POST", "/_matrix/client/v3/delete_devices", map[string]any{"devices": []string{"BOBTHREE"}})
	if st != http.StatusUnauthorized {
		t.Fatalf("delete_devices without auth: %d", st)
	}
	bob.MustDo(t, "POST", "/_matrix/client/v3/delete_devices", map[string]any{
		"devices": []string{"BOBTHREE"},
		"auth":    map[string]any{"type": "m.login.password", "user": bob.UserID, "password": bob.Password},
	})
	if st, _ := bob3.Do(t, "GET", "/_matrix/client/v3/account/whoami", nil); st != http.StatusUnauthorized {
		t.Fatalf("device deleted by delete_devices still works: %d", st)
	}
	if list := bob.MustDo(t, "GET", "/_matrix/client/v3/devices", nil); len(list["devices"].([]any)) != 1 {
		t.Fatalf("devices after deletes = %v", list)
	}
}

// TestKeysCrossSigning uploads cross-signing keys (UIA after the first time), signs a device
// and another user's master key, and checks who sees what in keys/query.
func TestKeysCrossSigning(t *testing.T) {
	s := shardtest.New(t)
	tn := s.CreateTenant(t, "xsign")
	alice := tn.Register(t, "alice")
	bob := tn.Register(t, "bob")
	carol := tn.Register(t, "carol")
	dk, _ := deviceKeys(t, alice)
	alice.MustDo(t, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": dk})

	master, masterPub, masterPriv := crossSigningKey(t, alice, "master", "", nil)
	ssk, sskPub, sskPriv := crossSigningKey(t, alice, "self_signing", masterPub, masterPriv)
	usk, _, _ := crossSigningKey(t, alice, "user_signing", masterPub, masterPriv)
	unsigned, _, _ := crossSigningKey(t, alice, "self_signing", "", nil)
	st, body := alice.Do(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"master_key": master, "self_signing_key": unsigned})
	wantErr(t, "self-signing key not signed by the master key", st, body, http.StatusBadRequest, "M_INVALID_SIGNATURE")
	// The first upload needs no auth; replaying it needs none either.
	for range 2 {
		alice.MustDo(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{
			"master_key": master, "self_signing_key": ssk, "user_signing_key": usk,
		})
	}
	// Replacing the keys needs the password.
	other, _, _ := crossSigningKey(t, alice, "master", "", nil)
	st, body = alice.Do(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"master_key": other})
	if st != http.StatusUnauthorized || body["flows"] == nil {
		t.Fatalf("replacing cross-signing keys without auth: %d %v", st, body)
	}
	q := alice.MustDo(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.UserID: []string{}}})
	if at(q, "master_keys", alice.UserID, "keys", "ed25519:"+masterPub) != masterPub {
		t.Fatalf("master key replaced without auth, or missing: %v", q["master_keys"])
	}
	if at(q, "user_signing_keys", alice.UserID) == nil {
		t.Fatalf("own user-signing key missing from own query: %v", q)
	}

	// Alice signs her device with her self-signing key.
	signedDevice := signObj(t, dk, alice.UserID, "ed25519:"+sskPub, sskPriv)
	up := alice.MustDo(t, "POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{
		alice.UserID: map[string]any{alice.DeviceID: signedDevice},
	})
	if f, _ := up["failures"].(map[string]any); len(f) != 0 {
		t.Fatalf("signatures/upload failures = %v", up)
	}
	q = bob.MustDo(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.UserID: []string{}}})
	if at(q, "device_keys", alice.UserID, alice.DeviceID, "signatures", alice.UserID, "ed25519:"+sskPub) == nil {
		t.Fatalf("device signature not merged: %v", at(q, "device_keys", alice.UserID))
	}
	if at(q, "master_keys", alice.UserID) == nil || at(q, "self_signing_keys", alice.UserID) == nil {
		t.Fatalf("cross-signing keys missing: %v", q)
	}
	if at(q, "user_signing_keys", alice.UserID) != nil {
		t.Fatalf("another user's user-signing key leaked: %v", q["user_signing_keys"])
	}
	// A forged signature is reported as a failure.
	forged := signObj(t, dk, alice.UserID, "ed25519:"+sskPub, masterPriv)
	up = alice.MustDo(t, "POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{alice.UserID: map[string]any{alice.DeviceID: forged}})
	if at(up, "failures", alice.UserID, alice.DeviceID, "errcode") != "M_INVALID_SIGNATURE" {
		t.Fatalf("forged signature: %v", up)
	}

	// Bob verifies Alice: his user-signing key signs her master key; only Bob sees it.
	bMaster, bMasterPub, bMasterPriv := crossSigningKey(t, bob, "master", "", nil)
	bUSK, bUSKPub, bUSKPriv := crossSigningKey(t, bob, "user_signing", bMasterPub, bMasterPriv)
	bob.MustDo(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"master_key": bMaster, "user_signing_key": bUSK})
	aliceMaster := at(q, "master_keys", alice.UserID).(map[string]any)
	up = bob.MustDo(t, "POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{
		alice.UserID: map[string]any{masterPub: signObj(t, aliceMaster, bob.UserID, "ed25519:"+bUSKPub, bUSKPriv)},
	})
	if f, _ := up["failures"].(map[string]any); len(f) != 0 {
		t.Fatalf("user-signing signature failures = %v", up)
	}
	q = bob.MustDo(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.UserID: []string{}}})
	if at(q, "master_keys", alice.UserID, "signatures", bob.UserID, "ed25519:"+bUSKPub) == nil {
		t.Fatalf("bob's signature on alice's master key not shown to bob: %v", q["master_keys"])
	}
	q = carol.MustDo(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.UserID: []string{}}})
	if at(q, "master_keys", alice.UserID, "signatures", bob.UserID) != nil {
		t.Fatalf("bob's user-signing signature shown to carol: %v", q["master_keys"])
	}

	// With the password, Alice can replace her keys; signatures by the old self-signing key go.
	master2, master2Pub, master2Priv := crossSigningKey(t, alice, "master", "", nil)
	ssk2, ssk2Pub, _ := crossSigningKey(t, alice, "self_signing", master2Pub, master2Priv)
	alice.MustDo(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{
		"master_key": master2, "self_signing_key": ssk2,
		"auth": map[string]any{"type": "m.login.password", "user": alice.UserID, "password": alice.Password},
	})
	q = bob.MustDo(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.UserID: []string{}}})
	if at(q, "master_keys", alice.UserID, "keys", "ed25519:"+master2Pub) != master2Pub || at(q, "self_signing_keys", alice.UserID, "keys", "ed25519:"+ssk2Pub) != ssk2Pub {
		t.Fatalf("replaced keys not served: %v", q)
	}
	if at(q, "device_keys", alice.UserID, alice.DeviceID, "signatures", alice.UserID, "ed25519:"+sskPub) != nil {
		t.Fatalf("signature by the replaced self-signing key still served: %v", at(q, "device_keys", alice.UserID))
	}
}

// TestKeysBackup drives server-side key backup: versions, the replacement rules, etag and
// count, and writes to a backup that is no longer current.
func TestKeysBackup(t *testing.T) {
	s := shardtest.New(t)
	tn := s.CreateTenant(t, "backup")
	alice := tn.Register(t, "alice")
	const alg = "m.megolm_backup.v1.curve25519-aes-sha2"

	st, body := alice.Do(t, "GET", "/_matrix/client/v3/room_keys/version", nil)
	wantErr(t, "no backup yet", st, body, http.StatusNotFound, "M_NOT_FOUND")
	v1 := alice.MustDo(t, "POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "abc"}})["version"].(string)
	cur := alice.MustDo(t, "GET", "/_matrix/client/v3/room_keys/version", nil)
	if cur["version"] != v1 || cur["count"] != float64(0) || cur["algorithm"] != alg || cur["etag"] == nil {
		t.Fatalf("current backup = %v", cur)
	}

	roomID, sessionID := "!room:backup.test", "sess/with+slash"
	data := func(fmi, fc int, verified bool, tag string) map[string]any {
		return map[string]any{"first_message_index": fmi, "forwarded_count": fc, "is_verified": verified, "session_data": map[string]any{"tag": tag}}
	}
	keysURL := "/_matrix/client/v3/room_keys/keys"
	sessURL := keysURL + "/" + url.PathEscape(roomID) + "/" + url.PathEscape(sessionID) + "?version=" + v1
	put := alice.MustDo(t, "PUT", keysURL+"?version="+v1, map[string]any{
		"rooms": map[string]any{roomID: map[string]any{"sessions": map[string]any{sessionID: data(5, 1, false, "first")}}},
	})
	if put["count"] != float64(1) {
		t.Fatalf("put keys = %v", put)
	}
	etag := put["etag"]
	for _, tc := range []struct {
		name    string
		data    map[string]any
		wantTag string
	}{
		{"higher first_message_index loses", data(9, 0, false, "worse"), "first"},
		{"same index, more forwards loses", data(5, 2, false, "worse"), "first"},
		{"same index, fewer forwards wins", data(5, 0, false, "fewer-forwards"), "fewer-forwards"},
		{"verified beats a lower index", data(20, 3, true, "verified"), "verified"},
		{"unverified never beats verified", data(0, 0, false, "unverified"), "verified"},
		{"verified with lower index wins", data(1, 3, true, "best"), "best"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			put := alice.MustDo(t, "PUT", sessURL, tc.data)
			got := alice.MustDo(t, "GET", sessURL, nil)
			if at(got, "session_data", "tag") != tc.wantTag {
				t.Fatalf("stored %v, want tag %s", got, tc.wantTag)
			}
			if changed := tc.wantTag == tc.data["session_data"].(map[string]any)["tag"]; changed == (put["etag"] == etag) {
				t.Fatalf("etag %v -> %v, key changed: %v", etag, put["etag"], changed)
			}
			etag = put["etag"]
		})
	}
	room := alice.MustDo(t, "GET", keysURL+"/"+url.PathEscape(roomID)+"?version="+v1, nil)
	if at(room, "sessions", sessionID, "session_data", "tag") != "best" {
		t.Fatalf("room keys = %v", room)
	}
	all := alice.MustDo(t, "GET", keysURL+"?version="+v1, nil)
	if at(all, "rooms", roomID, "sessions", sessionID) == nil {
		t.Fatalf("all keys = %v", all)
	}
	st, body = alice.Do(t, "GET", keysURL+"/"+url.PathEscape(roomID)+"/nope?version="+v1, nil)
	wantErr(t, "unknown session", st, body, http.StatusNotFound, "M_NOT_FOUND")

	// A new backup makes the old one read-only.
	v2 := alice.MustDo(t, "POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "def"}})["version"].(string)
	st, body = alice.Do(t, "PUT", sessURL, data(0, 0, true, "late"))
	wantErr(t, "write to an old backup", st, body, http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION")
	if body["current_version"] != v2 {
		t.Fatalf("current_version = %v, want %s", body["current_version"], v2)
	}
	st, body = alice.Do(t, "PUT", keysURL+"?version=999999", map[string]any{"rooms": map[string]any{}})
	wantErr(t, "write to an unknown backup", st, body, http.StatusNotFound, "M_NOT_FOUND")
	st, body = alice.Do(t, "PUT", "/_matrix/client/v3/room_keys/version/"+v2, map[string]any{"algorithm": "other", "auth_data": map[string]any{}})
	wantErr(t, "changing the algorithm", st, body, http.StatusBadRequest, "M_INVALID_PARAM")
	alice.MustDo(t, "PUT", "/_matrix/client/v3/room_keys/version/"+v2, map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "ghi"}})
	if got := alice.MustDo(t, "GET", "/_matrix/client/v3/room_keys/version/"+v2, nil); at(got, "auth_data", "public_key") != "ghi" {
		t.Fatalf("updated backup = %v", got)
	}

	del := alice.MustDo(t, "DELETE", keysURL+"/"+url.PathEscape(roomID)+"?version="+v1, nil)
	if del["count"] != float64(0) || del["etag"] == etag {
		t.Fatalf("delete room keys = %v", del)
	}
	alice.MustDo(t, "DELETE", "/_matrix/client/v3/room_keys/version/"+v2, nil)
	if got := alice.MustDo(t, "GET", "/_matrix/client/v3/room_keys/version", nil); got["version"] != v1 {
		t.Fatalf("after deleting %s the current backup is %v, want %s", v2, got["version"], v1)
	}
	st, body = alice.Do(t, "GET", "/_matrix/client/v3/room_keys/version/"+v2, nil)
	wantErr(t, "deleted backup", st, body, http.StatusNotFound, "M_NOT_FOUND")
}

// TestKeysBadInput checks malformed requests get the spec's 400 errors, never a 500.
func TestKeysBadInput(t *testing.T) {
	s := shardtest.New(t)
	tn := s.CreateTenant(t, "keysbad")
	alice := tn.Register(t, "alice")
	bob := tn.Register(t, "bob")
	dk, priv := deviceKeys(t, alice)
	otherDevice := signObj(t, map[string]any{"user_id": alice.UserID, "device_id": "OTHER", "algorithms": []string{"x"},
		"keys": map[string]any{"ed25519:OTHER": at(dk, "keys", "ed25519:"+alice.DeviceID)}}, alice.UserID, "ed25519:OTHER", priv)
	badSig := map[string]any{}
	for k, v := range dk {
		badSig[k] = v
	}
	badSig["algorithms"] = []string{"tampered"}
	v := alice.MustDo(t, "POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": "a", "auth_data": map[string]any{}})["version"].(string)
	goodData := map[string]any{"first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": map[string]any{}}

	// An escaped backslash followed by "u0000" is text, not a NUL.
	alice.MustDo(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/t5", `{"messages":{"`+bob.UserID+`":{"*":{"a":"\\u0000"}}}}`)

	for _, tc := range []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"upload: not JSON", "POST", "/_matrix/client/v3/keys/upload", "{nope", 400, "M_NOT_JSON"},
		{"upload: device_keys not an object", "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": "x"}, 400, "M_BAD_JSON"},
		{"upload: keys of another device", "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": otherDevice}, 400, "M_INVALID_PARAM"},
		{"upload: bad self-signature", "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": badSig}, 400, "M_INVALID_SIGNATURE"},
		{"upload: keys wrong type", "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": map[string]any{"user_id": alice.UserID, "keys": []int{1}}}, 400, "M_BAD_JSON"},
		{"upload: one-time key ID without algorithm", "POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": map[string]any{"AAAA": "k"}}, 400, "M_INVALID_PARAM"},
		{"upload: one-time key a number", "POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": map[string]any{"curve25519:A": 5}}, 400, "M_BAD_JSON"},
		{"upload: two fallback keys of one algorithm", "POST", "/_matrix/client/v3/keys/upload", map[string]any{"fallback_keys": map[string]any{"c:A": "k", "c:B": "k"}}, 400, "M_INVALID_PARAM"},
		{"query: device_keys missing", "POST", "/_matrix/client/v3/keys/query", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"query: device_keys wrong type", "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": []string{"x"}}, 400, "M_BAD_JSON"},
		{"query: invalid user ID", "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{"alice": []string{}}}, 400, "M_INVALID_PARAM"},
		{"claim: one_time_keys missing", "POST", "/_matrix/client/v3/keys/claim", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"claim: algorithm wrong type", "POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{bob.UserID: map[string]any{"D": 1}}}, 400, "M_BAD_JSON"},
		{"changes: from missing", "GET", "/_matrix/client/v3/keys/changes", nil, 400, "M_MISSING_PARAM"},
		{"changes: bad from", "GET", "/_matrix/client/v3/keys/changes?from=xyz", nil, 400, "M_INVALID_PARAM"},
		{"changes: bad to", "GET", "/_matrix/client/v3/keys/changes?from=s1_0&to=x", nil, 400, "M_INVALID_PARAM"},
		{"device_signing: nothing", "POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"device_signing: master for another user", "POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"master_key": map[string]any{"user_id": bob.UserID, "usage": []string{"master"}, "keys": map[string]any{"ed25519:x": "x"}}}, 400, "M_INVALID_PARAM"},
		{"device_signing: bad key", "POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"master_key": map[string]any{"user_id": alice.UserID, "usage": []string{"master"}, "keys": map[string]any{"ed25519:x": "x"}}}, 400, "M_INVALID_PARAM"},
		{"signatures: wrong type", "POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{alice.UserID: "x"}, 400, "M_BAD_JSON"},
		{"sendToDevice: content not an object", "PUT", "/_matrix/client/v3/sendToDevice/m.test/t1", map[string]any{"messages": map[string]any{bob.UserID: map[string]any{"*": "hi"}}}, 400, "M_BAD_JSON"},
		{"sendToDevice: messages missing", "PUT", "/_matrix/client/v3/sendToDevice/m.test/t2", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"sendToDevice: invalid user", "PUT", "/_matrix/client/v3/sendToDevice/m.test/t3", map[string]any{"messages": map[string]any{"bob": map[string]any{}}}, 400, "M_INVALID_PARAM"},
		{"devices: display_name wrong type", "PUT", "/_matrix/client/v3/devices/" + alice.DeviceID, map[string]any{"display_name": 5}, 400, "M_BAD_JSON"},
		{"delete_devices: devices missing", "POST", "/_matrix/client/v3/delete_devices", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"backup: algorithm missing", "POST", "/_matrix/client/v3/room_keys/version", map[string]any{"auth_data": map[string]any{}}, 400, "M_MISSING_PARAM"},
		{"backup: auth_data not an object", "POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": "a", "auth_data": 3}, 400, "M_BAD_JSON"},
		{"backup: version not a number", "GET", "/_matrix/client/v3/room_keys/version/abc", nil, 404, "M_NOT_FOUND"},
		{"backup keys: version missing", "PUT", "/_matrix/client/v3/room_keys/keys", map[string]any{"rooms": map[string]any{}}, 400, "M_MISSING_PARAM"},
		{"backup keys: data incomplete", "PUT", "/_matrix/client/v3/room_keys/keys/!r:x/s?version=" + v, map[string]any{"first_message_index": 1}, 400, "M_MISSING_PARAM"},
		{"backup keys: negative index", "PUT", "/_matrix/client/v3/room_keys/keys/!r:x/s?version=" + v, map[string]any{"first_message_index": -1, "forwarded_count": 0, "is_verified": false, "session_data": map[string]any{}}, 400, "M_INVALID_PARAM"},
		{"backup keys: sessions wrong type", "PUT", "/_matrix/client/v3/room_keys/keys/!r:x?version=" + v, map[string]any{"sessions": []any{goodData}}, 400, "M_BAD_JSON"},
		{"NUL in a path", "PUT", "/_matrix/client/v3/sendToDevice/m.test/t%00x", map[string]any{"messages": map[string]any{}}, 400, "M_INVALID_PARAM"},
		{"NUL in a device ID", "GET", "/_matrix/client/v3/devices/%00", nil, 400, "M_INVALID_PARAM"},
		{"NUL in to-device content", "PUT", "/_matrix/client/v3/sendToDevice/m.test/t4", `{"messages":{"` + bob.UserID + `":{"*":{"a":"\u0000"}}}}`, 400, "M_BAD_JSON"},
		{"NUL in a key ID", "POST", "/_matrix/client/v3/keys/upload", `{"one_time_keys":{"a:\u0000":"x"}}`, 400, "M_BAD_JSON"},
		{"NUL in auth_data", "POST", "/_matrix/client/v3/room_keys/version", `{"algorithm":"a","auth_data":{"x":"\u0000"}}`, 400, "M_BAD_JSON"},
		{"backup keys: rooms missing", "PUT", "/_matrix/client/v3/room_keys/keys?version=" + v, map[string]any{}, 400, "M_MISSING_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, body := alice.Do(t, tc.method, tc.path, tc.body)
			wantErr(t, tc.name, st, body, tc.status, tc.code)
		})
	}
}

// TestKeysClaimConcurrent claims one-time keys from many requests at once: each key is handed
// out exactly once.
func TestKeysClaimConcurrent(t *testing.T) {
	s := shardtest.New(t)
	tn := s.CreateTenant(t, "claims")
	alice := tn.Register(t, "alice")
	const n = 12
	otks := map[string]any{}
	for i := range n {
		otks[fmt.Sprintf("signed_curve25519:K%02d", i)] = map[string]any{"key": fmt.Sprint(i)}
	}
	alice.MustDo(t, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": otks})
	claimers := make([]*shardtest.Client, n)
	for i := range claimers {
		claimers[i] = tn.Register(t, fmt.Sprintf("claimer%d", i))
	}
	results := make(chan string, n)
	var wg sync.WaitGroup
	for _, c := range claimers {
		wg.Go(func() {
			st, body := c.Do(t, "POST", "/_matrix/client/v3/keys/claim", map[string]any{
				"one_time_keys": map[string]any{alice.UserID: map[string]any{alice.DeviceID: "signed_curve25519"}},
			})
			keys, _ := at(body, "one_time_keys", alice.UserID, alice.DeviceID).(map[string]any)
			if st != http.StatusOK || len(keys) != 1 {
				t.Errorf("claim: %d %v", st, body)
				results <- ""
				return
			}
			for id := range keys {
				results <- id
			}
		})
	}
	wg.Wait()
	close(results)
	seen := map[string]bool{}
	for id := range results {
		if id != "" && seen[id] {
			t.Errorf("key %s claimed twice", id)
		}
		seen[id] = true
	}
	if len(seen) != n {
		t.Errorf("claimed %d distinct keys, want %d", len(seen), n)
	}
	if c := otkCount(t, alice); c != 0 {
		t.Errorf("one-time keys left: %v", c)
	}
}
