package clientapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// errInvalidSignature is the spec's code for a signature that does not verify.
const errInvalidSignature spec.MatrixErrorCode = "M_INVALID_SIGNATURE"

// Cross-signing key types, as stored and as named in a key's usage.
const (
	keyTypeMaster      = "master"
	keyTypeSelfSigning = "self_signing"
	keyTypeUserSigning = "user_signing"
)

// deviceKeysBody is the spec's DeviceKeys object.
type deviceKeysBody struct {
	UserID     string                       `json:"user_id"`
	DeviceID   string                       `json:"device_id"`
	Algorithms []string                     `json:"algorithms"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// crossSigningKeyBody is the spec's CrossSigningKey object.
type crossSigningKeyBody struct {
	UserID     string                       `json:"user_id"`
	Usage      []string                     `json:"usage"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// decodeEd25519 reads an unpadded (or padded) base64 ed25519 public key.
func decodeEd25519(s string) (ed25519.PublicKey, bool) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, false
	}
	return ed25519.PublicKey(b), true
}

// present reports whether an optional JSON field was given (and not null).
func present(raw json.RawMessage) bool {
	return len(raw) > 0 && !bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// jsonObject decodes raw as a JSON object's top-level fields.
func jsonObject(raw json.RawMessage, what string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, mxhttp.BadJSON("%s must be a JSON object", what)
	}
	return m, nil
}

// withoutSignatures is the canonical JSON of a signed object minus signatures and unsigned:
// what its signatures cover, for comparing two copies of a key.
func withoutSignatures(raw json.RawMessage) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	delete(m, "signatures")
	delete(m, "unsigned")
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.CanonicalJSON(b)
}

// validateDeviceKeys checks uploaded device keys belong to the session's device and are
// self-signed by their ed25519 key, and returns them without "unsigned" for storage.
func validateDeviceKeys(raw json.RawMessage, sess *Session) (json.RawMessage, error) {
	fields, err := jsonObject(raw, "device_keys")
	if err != nil {
		return nil, err
	}
	var dk deviceKeysBody
	if err := json.Unmarshal(raw, &dk); err != nil {
		return nil, mxhttp.BadJSON("device_keys is malformed")
	}
	if dk.UserID != sess.UserID || dk.DeviceID != sess.DeviceID {
		return nil, mxhttp.InvalidParam("device_keys must be for user %s and device %s", sess.UserID, sess.DeviceID)
	}
	if len(dk.Algorithms) == 0 {
		return nil, mxhttp.MissingParam("device_keys.algorithms is required")
	}
	keyID := "ed25519:" + sess.DeviceID
	pub, ok := decodeEd25519(dk.Keys[keyID])
	if !ok {
		return nil, mxhttp.InvalidParam("device_keys.keys must hold a valid %s key", keyID)
	}
	if err := gomatrixserverlib.VerifyJSON(sess.UserID, gomatrixserverlib.KeyID(keyID), pub, raw); err != nil {
		return nil, mxhttp.Code(http.StatusBadRequest, errInvalidSignature, "device_keys must be signed by %s", keyID)
	}
	delete(fields, "unsigned")
	out, err := json.Marshal(fields)
	if err != nil {
		return nil, mxhttp.BadJSON("device_keys is malformed")
	}
	return out, nil
}

// parseOneTimeKeys validates a map of "<algorithm>:<key ID>" to key (a string or a signed
// object).
func parseOneTimeKeys(m map[string]json.RawMessage, field string) ([]storage.OneTimeKey, error) {
	out := make([]storage.OneTimeKey, 0, len(m))
	for id, raw := range m {
		alg, kid, ok := strings.Cut(id, ":")
		if !ok || alg == "" || kid == "" || len(id) > 255 {
			return nil, mxhttp.InvalidParam("%s key ID %q must be <algorithm>:<key ID>", field, truncate(id, 80))
		}
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 || raw[0] != '"' && raw[0] != '{' {
			return nil, mxhttp.BadJSON("%s key %q must be a string or an object", field, truncate(id, 80))
		}
		out = append(out, storage.OneTimeKey{KeyID: id, Algorithm: alg, KeyJSON: raw})
	}
	return out, nil
}

func (s *Server) uploadKeys(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var req struct {
		DeviceKeys   json.RawMessage            `json:"device_keys"`
		OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	var devKeys json.RawMessage
	if present(req.DeviceKeys) {
		var err error
		if devKeys, err = validateDeviceKeys(req.DeviceKeys, sess); err != nil {
			return err
		}
	}
	otks, err := parseOneTimeKeys(req.OneTimeKeys, "one_time_keys")
	if err != nil {
		return err
	}
	fbks, err := parseOneTimeKeys(req.FallbackKeys, "fallback_keys")
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, k := range fbks {
		if seen[k.Algorithm] {
			return mxhttp.InvalidParam("fallback_keys may hold one key per algorithm")
		}
		seen[k.Algorithm] = true
	}
	ctx := r.Context()
	var changed bool
	var counts map[string]int
	err = sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		if devKeys != nil {
			var err error
			if changed, err = storage.PutDeviceKeys(ctx, q, sess.UserID, sess.DeviceID, devKeys); err != nil {
				return err
			}
			if changed {
				if _, err := storage.MarkDeviceListChanged(ctx, q, sess.UserID); err != nil {
					return err
				}
			}
		}
		if err := storage.PutOneTimeKeys(ctx, q, sess.UserID, sess.DeviceID, otks); err != nil {
			return err
		}
		for _, k := range fbks {
			if err := storage.PutFallbackKey(ctx, q, sess.UserID, sess.DeviceID, k); err != nil {
				return err
			}
		}
		var err error
		counts, err = storage.OneTimeKeyCounts(ctx, q, sess.UserID, sess.DeviceID)
		return err
	})
	if errors.Is(err, storage.ErrKeyConflict) {
		return mxhttp.InvalidParam("a one-time key with this ID was already uploaded with other content")
	}
	if err != nil {
		return err
	}
	if changed {
		s.notifier.Notify(sess.T.TenantID)
		s.deviceListChanged(ctx, sess.T, sess.UserID, []string{sess.DeviceID}, false, false)
	}
	if _, ok := counts["signed_curve25519"]; !ok {
		counts["signed_curve25519"] = 0
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"one_time_key_counts": counts})
}

// splitUsers parses user IDs and splits them into local localparts' full IDs and remote
// servers.
func splitUsers(t *Tenant, users []string) (local []string, remote map[string]bool, err error) {
	remote = map[string]bool{}
	for _, u := range users {
		uid, err := spec.NewUserID(u, true)
		if err != nil {
			return nil, nil, mxhttp.InvalidParam("invalid user ID %q", truncate(u, 80))
		}
		if uid.Domain() != t.ServerName {
			remote[string(uid.Domain())] = true
			continue
		}
		local = append(local, u)
	}
	return local, remote, nil
}

// federationFailures is the "failures" map for servers this shard cannot query yet.
func federationFailures(remote map[string]bool) map[string]any {
	out := map[string]any{}
	for srv := range remote {
		out[srv] = map[string]any{"status": http.StatusServiceUnavailable, "message": "federation is not available"}
	}
	return out
}

// mergeSignatures adds signatures (and unsigned fields) to a stored signed object.
func mergeSignatures(raw json.RawMessage, sigs []storage.KeySignature, unsigned map[string]any) (json.RawMessage, error) {
	if len(sigs) == 0 && len(unsigned) == 0 {
		return raw, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	if len(sigs) > 0 {
		all := map[string]map[string]string{}
		if s, ok := obj["signatures"]; ok {
			_ = json.Unmarshal(s, &all)
			if all == nil {
				all = map[string]map[string]string{}
			}
		}
		for _, sg := range sigs {
			if all[sg.SignerUserID] == nil {
				all[sg.SignerUserID] = map[string]string{}
			}
			all[sg.SignerUserID][sg.SignerKeyID] = sg.Signature
		}
		b, err := json.Marshal(all)
		if err != nil {
			return nil, err
		}
		obj["signatures"] = b
	}
	if len(unsigned) > 0 {
		b, err := json.Marshal(unsigned)
		if err != nil {
			return nil, err
		}
		obj["unsigned"] = b
	}
	return json.Marshal(obj)
}

// crossSigningPublicKey returns the public key (unpadded base64) of a stored cross-signing key.
func crossSigningPublicKey(raw json.RawMessage) string {
	var k crossSigningKeyBody
	if json.Unmarshal(raw, &k) != nil {
		return ""
	}
	for id := range k.Keys {
		if pub, ok := strings.CutPrefix(id, "ed25519:"); ok {
			return pub
		}
	}
	return ""
}

// KeysQueryResponse is the answer of keys/query, on the client and the federation API.
type KeysQueryResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	Failures        map[string]any                        `json:"failures"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys,omitempty"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys,omitempty"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys,omitempty"`
}

// newKeysQueryResponse returns an empty answer with every map made.
func newKeysQueryResponse() KeysQueryResponse {
	return KeysQueryResponse{
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		Failures:        map[string]any{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
	}
}

// LocalKeys adds the device and cross-signing keys of local users (each with the devices
// asked for, all when none) to resp, as viewer sees them: signatures by the owner and by the
// viewer, the user-signing key only to its owner. viewer is "" for another server.
func LocalKeys(ctx context.Context, q pgdb.DBTX, users map[string][]string, viewer string, resp *KeysQueryResponse) error {
	for u, devices := range users {
		devs, err := storage.QueryDeviceKeys(ctx, q, u, devices)
		if err != nil {
			return err
		}
		sigs, err := storage.KeySignatures(ctx, q, u)
		if err != nil {
			return err
		}
		out := map[string]json.RawMessage{}
		for _, d := range devs {
			var unsigned map[string]any
			if d.DisplayName != "" {
				unsigned = map[string]any{"device_display_name": d.DisplayName}
			}
			merged, err := mergeSignatures(d.KeyJSON, signaturesOn(sigs, d.DeviceID, u, viewer), unsigned)
			if err != nil {
				return err
			}
			out[d.DeviceID] = merged
		}
		resp.DeviceKeys[u] = out
		cs, err := storage.CrossSigningKeys(ctx, q, u)
		if err != nil {
			return err
		}
		for typ, raw := range cs {
			merged, err := mergeSignatures(raw, signaturesOn(sigs, crossSigningPublicKey(raw), u, viewer), nil)
			if err != nil {
				return err
			}
			switch typ {
			case keyTypeMaster:
				resp.MasterKeys[u] = merged
			case keyTypeSelfSigning:
				resp.SelfSigningKeys[u] = merged
			case keyTypeUserSigning:
				if u == viewer {
					resp.UserSigningKeys[u] = merged
				}
			}
		}
	}
	return nil
}

// ClaimLocalKeys claims one one-time key (or the fallback key) of each local device asked
// for, as user -> device -> algorithm.
func ClaimLocalKeys(ctx context.Context, q pgdb.DBTX, req map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	claimed := map[string]map[string]map[string]json.RawMessage{}
	for u, devices := range req {
		for dev, alg := range devices {
			if alg == "" {
				return nil, mxhttp.InvalidParam("one_time_keys must name an algorithm for each device")
			}
			k, err := storage.ClaimOneTimeKey(ctx, q, u, dev, alg)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if claimed[u] == nil {
				claimed[u] = map[string]map[string]json.RawMessage{}
			}
			claimed[u][dev] = map[string]json.RawMessage{k.KeyID: k.KeyJSON}
		}
	}
	return claimed, nil
}

// remoteTimeout is how long keys/query and keys/claim wait for other servers: the request's
// timeout in milliseconds, 10 s by default, at most 30 s.
func remoteTimeout(ms *int64) time.Duration {
	d := 10 * time.Second
	if ms != nil && *ms > 0 {
		d = time.Duration(*ms) * time.Millisecond
	}
	return min(d, 30*time.Second)
}

// askServers calls ask for every remote server in parallel under one timeout, and returns
// the failures map entry of each server that did not answer.
func (s *Server) askServers(ctx context.Context, servers []string, timeout time.Duration, ask func(ctx context.Context, server string) error) map[string]any {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	failures := map[string]any{}
	for _, srv := range servers {
		wg.Go(func() {
			if err := ask(ctx, srv); err != nil {
				s.log.InfoContext(ctx, "remote key request failed", "server", srv, "err", err)
				mu.Lock()
				failures[srv] = map[string]any{"status": http.StatusServiceUnavailable, "message": truncate(err.Error(), 200)}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return failures
}

// byServer groups a request's remote users by their server.
func byServer[V any](t *Tenant, req map[string]V) map[string]map[string]V {
	out := map[string]map[string]V{}
	for u, v := range req {
		uid, err := spec.NewUserID(u, true)
		if err != nil || uid.Domain() == t.ServerName {
			continue
		}
		srv := string(uid.Domain())
		if out[srv] == nil {
			out[srv] = map[string]V{}
		}
		out[srv][u] = v
	}
	return out
}

func (s *Server) queryKeys(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
		Timeout    *int64              `json:"timeout"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.DeviceKeys == nil {
		return mxhttp.MissingParam("device_keys is required")
	}
	users := make([]string, 0, len(req.DeviceKeys))
	for u := range req.DeviceKeys {
		users = append(users, u)
	}
	local, remote, err := splitUsers(sess.T, users)
	if err != nil {
		return err
	}
	resp := newKeysQueryResponse()
	ctx := r.Context()
	localReq := make(map[string][]string, len(local))
	for _, u := range local {
		localReq[u] = req.DeviceKeys[u]
	}
	err = sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		return LocalKeys(ctx, q, localReq, sess.UserID, &resp)
	})
	if err != nil {
		return err
	}
	if s.opts.Keys == nil {
		resp.Failures = federationFailures(remote)
		return mxhttp.JSON(w, http.StatusOK, resp)
	}
	groups := byServer(sess.T, req.DeviceKeys)
	var mu sync.Mutex
	resp.Failures = s.askServers(ctx, slices.Collect(maps.Keys(groups)), remoteTimeout(req.Timeout), func(ctx context.Context, srv string) error {
		got, err := s.opts.Keys.QueryKeys(ctx, sess.T, srv, groups[srv])
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		maps.Copy(resp.DeviceKeys, got.DeviceKeys)
		maps.Copy(resp.MasterKeys, got.MasterKeys)
		maps.Copy(resp.SelfSigningKeys, got.SelfSigningKeys)
		return nil
	})
	return mxhttp.JSON(w, http.StatusOK, resp)
}

// signaturesOn picks the signatures over one key that viewer may see: the owner's own, and
// other users' only by the viewer (a user-signing signature is private to its signer).
func signaturesOn(sigs []storage.KeySignature, keyID, owner, viewer string) []storage.KeySignature {
	var out []storage.KeySignature
	for _, sg := range sigs {
		if sg.TargetKeyID == keyID && keyID != "" && (sg.SignerUserID == owner || sg.SignerUserID == viewer) {
			out = append(out, sg)
		}
	}
	return out
}

func (s *Server) claimKeys(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     *int64                       `json:"timeout"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.OneTimeKeys == nil {
		return mxhttp.MissingParam("one_time_keys is required")
	}
	users := make([]string, 0, len(req.OneTimeKeys))
	for u := range req.OneTimeKeys {
		users = append(users, u)
	}
	local, remote, err := splitUsers(sess.T, users)
	if err != nil {
		return err
	}
	localReq := make(map[string]map[string]string, len(local))
	for _, u := range local {
		localReq[u] = req.OneTimeKeys[u]
	}
	var claimed map[string]map[string]map[string]json.RawMessage
	ctx := r.Context()
	err = sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		var err error
		claimed, err = ClaimLocalKeys(ctx, q, localReq)
		return err
	})
	if err != nil {
		return err
	}
	if s.opts.Keys == nil {
		return mxhttp.JSON(w, http.StatusOK, map[string]any{"one_time_keys": claimed, "failures": federationFailures(remote)})
	}
	groups := byServer(sess.T, req.OneTimeKeys)
	var mu sync.Mutex
	failures := s.askServers(ctx, slices.Collect(maps.Keys(groups)), remoteTimeout(req.Timeout), func(ctx context.Context, srv string) error {
		got, err := s.opts.Keys.ClaimKeys(ctx, sess.T, srv, groups[srv])
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		maps.Copy(claimed, got)
		return nil
	})
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"one_time_keys": claimed, "failures": failures})
}

func (s *Server) keyChanges(w http.ResponseWriter, r *http.Request, sess *Session) error {
	qp := r.URL.Query()
	if qp.Get("from") == "" {
		return mxhttp.MissingParam("from is required")
	}
	from, err := parseSyncToken(qp.Get("from"))
	if err != nil {
		return err
	}
	ctx := r.Context()
	resp := struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	}{Changed: []string{}, Left: []string{}}
	err = sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		to := int64(0)
		if qp.Get("to") != "" {
			t, err := parseSyncToken(qp.Get("to"))
			if err != nil {
				return err
			}
			to = t.Pos
		} else {
			var err error
			if to, err = storage.CurrentStreamPos(ctx, q); err != nil {
				return err
			}
		}
		shared, err := storage.SharedRoomUsers(ctx, q, sess.UserID)
		if err != nil {
			return err
		}
		sharedSet := map[string]bool{sess.UserID: true}
		for _, u := range shared {
			sharedSet[u] = true
		}
		candidates := make([]string, 0, len(sharedSet))
		for u := range sharedSet {
			candidates = append(candidates, u)
		}
		changed, err := storage.DeviceListChangesSince(ctx, q, candidates, from.Pos, to)
		if err != nil {
			return err
		}
		resp.Changed = append(resp.Changed, changed...)
		left, err := storage.UsersLeftSince(ctx, q, sess.UserID, from.Pos, to)
		if err != nil {
			return err
		}
		for _, u := range left {
			if !sharedSet[u] {
				resp.Left = append(resp.Left, u)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, resp)
}

// validateCrossSigningKey checks an uploaded cross-signing key is the session user's, has the
// expected usage and exactly one ed25519 key, and returns that public key.
func validateCrossSigningKey(raw json.RawMessage, typ string, sess *Session) (string, ed25519.PublicKey, error) {
	if _, err := jsonObject(raw, typ+"_key"); err != nil {
		return "", nil, err
	}
	var k crossSigningKeyBody
	if err := json.Unmarshal(raw, &k); err != nil {
		return "", nil, mxhttp.BadJSON("%s_key is malformed", typ)
	}
	if k.UserID != sess.UserID {
		return "", nil, mxhttp.InvalidParam("%s_key must be for user %s", typ, sess.UserID)
	}
	usage := false
	for _, u := range k.Usage {
		usage = usage || u == typ
	}
	if !usage {
		return "", nil, mxhttp.InvalidParam("%s_key must have usage %q", typ, typ)
	}
	if len(k.Keys) != 1 {
		return "", nil, mxhttp.InvalidParam("%s_key must hold exactly one key", typ)
	}
	for id, val := range k.Keys {
		pubStr, ok := strings.CutPrefix(id, "ed25519:")
		pub, valid := decodeEd25519(val)
		if !ok || pubStr != val || !valid {
			return "", nil, mxhttp.InvalidParam("%s_key must hold one ed25519 key named after itself", typ)
		}
		return pubStr, pub, nil
	}
	return "", nil, nil // unreachable: one key checked above
}

func (s *Server) uploadCrossSigningKeys(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var req struct {
		MasterKey      json.RawMessage `json:"master_key"`
		SelfSigningKey json.RawMessage `json:"self_signing_key"`
		UserSigningKey json.RawMessage `json:"user_signing_key"`
		Auth           *uiaAuth        `json:"auth"`
	}
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	uploaded := map[string]json.RawMessage{}
	for typ, raw := range map[string]json.RawMessage{keyTypeMaster: req.MasterKey, keyTypeSelfSigning: req.SelfSigningKey, keyTypeUserSigning: req.UserSigningKey} {
		if present(raw) {
			uploaded[typ] = raw
		}
	}
	if len(uploaded) == 0 {
		return mxhttp.MissingParam("no cross-signing keys were given")
	}
	ctx := r.Context()
	var existing map[string]json.RawMessage
	err := sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		var err error
		existing, err = storage.CrossSigningKeys(ctx, q, sess.UserID)
		return err
	})
	if err != nil {
		return err
	}

	// Find the master key the others must be signed by: the new one, else the stored one.
	var masterPubStr string
	var masterPub ed25519.PublicKey
	if raw, ok := uploaded[keyTypeMaster]; ok {
		if masterPubStr, masterPub, err = validateCrossSigningKey(raw, keyTypeMaster, sess); err != nil {
			return err
		}
	} else if raw, ok := existing[keyTypeMaster]; ok {
		masterPubStr = crossSigningPublicKey(raw)
		masterPub, _ = decodeEd25519(masterPubStr)
	}
	if masterPub == nil {
		return mxhttp.MissingParam("master_key is required")
	}
	for _, typ := range []string{keyTypeSelfSigning, keyTypeUserSigning} {
		raw, ok := uploaded[typ]
		if !ok {
			continue
		}
		if _, _, err := validateCrossSigningKey(raw, typ, sess); err != nil {
			return err
		}
		if err := gomatrixserverlib.VerifyJSON(sess.UserID, gomatrixserverlib.KeyID("ed25519:"+masterPubStr), masterPub, raw); err != nil {
			return mxhttp.Code(http.StatusBadRequest, errInvalidSignature, "%s_key must be signed by the master key", typ)
		}
	}

	// Replaying keys already stored needs no authentication; the first upload needs none
	// either, as there is nothing to take over yet.
	same := true
	for typ, raw := range uploaded {
		old, ok := existing[typ]
		if !ok {
			same = false
			break
		}
		a, errA := gomatrixserverlib.CanonicalJSON(raw)
		b, errB := gomatrixserverlib.CanonicalJSON(old)
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			same = false
			break
		}
	}
	if same {
		return mxhttp.JSON(w, http.StatusOK, struct{}{})
	}
	if len(existing) > 0 {
		if err := s.requirePassword(r, sess, req.Auth); err != nil {
			return err
		}
	}
	err = sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		for typ, raw := range uploaded {
			// Signatures by a replaced self- or user-signing key no longer mean anything.
			if old, ok := existing[typ]; ok && typ != keyTypeMaster {
				if pub := crossSigningPublicKey(old); pub != "" && pub != crossSigningPublicKey(raw) {
					if err := storage.DeleteSignaturesBy(ctx, q, sess.UserID, "ed25519:"+pub); err != nil {
						return err
					}
				}
			}
			if err := storage.PutCrossSigningKey(ctx, q, sess.UserID, typ, raw); err != nil {
				return err
			}
		}
		_, err := storage.MarkDeviceListChanged(ctx, q, sess.UserID)
		return err
	})
	if err != nil {
		return err
	}
	s.notifier.Notify(sess.T.TenantID)
	s.deviceListChanged(ctx, sess.T, sess.UserID, nil, false, true)
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

// signatureFailure is one entry of signatures/upload's failures map.
type signatureFailure struct {
	ErrCode spec.MatrixErrorCode `json:"errcode"`
	Error   string               `json:"error"`
}

func (s *Server) uploadSignatures(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var req map[string]map[string]json.RawMessage
	if err := mxhttp.DecodeJSON(r, &req); err != nil {
		return err
	}
	failures := map[string]map[string]signatureFailure{}
	fail := func(user, key string, code spec.MatrixErrorCode, msg string) {
		if failures[user] == nil {
			failures[user] = map[string]signatureFailure{}
		}
		failures[user][key] = signatureFailure{ErrCode: code, Error: msg}
	}
	ctx := r.Context()
	stored := false
	err := sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		own, err := storage.CrossSigningKeys(ctx, q, sess.UserID)
		if err != nil {
			return err
		}
		for user, keys := range req {
			uid, err := spec.NewUserID(user, true)
			if err != nil {
				return mxhttp.InvalidParam("invalid user ID %q", truncate(user, 80))
			}
			for keyID, obj := range keys {
				if uid.Domain() != sess.T.ServerName {
					fail(user, keyID, spec.ErrorUnknown, "federation is not available")
					continue
				}
				var sigs []storage.KeySignature
				var code spec.MatrixErrorCode
				var msg string
				if user == sess.UserID {
					sigs, code, msg, err = ownKeySignatures(ctx, q, sess, own, keyID, obj)
				} else {
					sigs, code, msg, err = userSigningSignature(ctx, q, sess, own, user, keyID, obj)
				}
				if err != nil {
					return err
				}
				if code != "" {
					fail(user, keyID, code, msg)
					continue
				}
				for _, sg := range sigs {
					if err := storage.PutKeySignature(ctx, q, sg); err != nil {
						return err
					}
					stored = true
				}
			}
		}
		if stored {
			_, err := storage.MarkDeviceListChanged(ctx, q, sess.UserID)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if stored {
		s.notifier.Notify(sess.T.TenantID)
		s.deviceListChanged(ctx, sess.T, sess.UserID, nil, false, true)
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"failures": failures})
}

// signedBy returns the signature by signer's key keyID in a signed object, "" if none.
func signedBy(obj json.RawMessage, signer, keyID string) string {
	var o struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	_ = json.Unmarshal(obj, &o)
	return o.Signatures[signer][keyID]
}

// sameKey reports whether an uploaded signed object is the stored key (signatures aside).
func sameKey(uploaded, stored json.RawMessage) bool {
	a, errA := withoutSignatures(uploaded)
	b, errB := withoutSignatures(stored)
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

// ownKeySignatures checks signatures a user uploads over their own keys: a device signed by
// the self-signing key, or the master key signed by the user's devices.
func ownKeySignatures(ctx context.Context, q pgdb.DBTX, sess *Session, own map[string]json.RawMessage, keyID string, obj json.RawMessage) ([]storage.KeySignature, spec.MatrixErrorCode, string, error) {
	if masterRaw, ok := own[keyTypeMaster]; ok && keyID == crossSigningPublicKey(masterRaw) {
		if !sameKey(obj, masterRaw) {
			return nil, spec.ErrorInvalidParam, "the signed object is not the stored master key", nil
		}
		devs, err := storage.QueryDeviceKeys(ctx, q, sess.UserID, nil)
		if err != nil {
			return nil, "", "", err
		}
		var out []storage.KeySignature
		for _, d := range devs {
			var dk deviceKeysBody
			if json.Unmarshal(d.KeyJSON, &dk) != nil {
				continue
			}
			sigKeyID := "ed25519:" + d.DeviceID
			sig := signedBy(obj, sess.UserID, sigKeyID)
			if sig == "" {
				continue
			}
			pub, ok := decodeEd25519(dk.Keys[sigKeyID])
			if !ok || gomatrixserverlib.VerifyJSON(sess.UserID, gomatrixserverlib.KeyID(sigKeyID), pub, obj) != nil {
				return nil, errInvalidSignature, "invalid signature by " + sigKeyID, nil
			}
			out = append(out, storage.KeySignature{TargetUserID: sess.UserID, TargetKeyID: keyID, SignerUserID: sess.UserID, SignerKeyID: sigKeyID, Signature: sig})
		}
		if len(out) == 0 {
			return nil, errInvalidSignature, "no signature by one of the user's devices", nil
		}
		return out, "", "", nil
	}
	devs, err := storage.QueryDeviceKeys(ctx, q, sess.UserID, []string{keyID})
	if err != nil {
		return nil, "", "", err
	}
	if len(devs) == 0 {
		return nil, spec.ErrorNotFound, "unknown device or key", nil
	}
	if !sameKey(obj, devs[0].KeyJSON) {
		return nil, spec.ErrorInvalidParam, "the signed object is not the stored device key", nil
	}
	sskRaw, ok := own[keyTypeSelfSigning]
	if !ok {
		return nil, errInvalidSignature, "the user has no self-signing key", nil
	}
	sskPub := crossSigningPublicKey(sskRaw)
	pub, _ := decodeEd25519(sskPub)
	sigKeyID := "ed25519:" + sskPub
	sig := signedBy(obj, sess.UserID, sigKeyID)
	if sig == "" || pub == nil || gomatrixserverlib.VerifyJSON(sess.UserID, gomatrixserverlib.KeyID(sigKeyID), pub, obj) != nil {
		return nil, errInvalidSignature, "the device must be signed by the self-signing key", nil
	}
	return []storage.KeySignature{{TargetUserID: sess.UserID, TargetKeyID: keyID, SignerUserID: sess.UserID, SignerKeyID: sigKeyID, Signature: sig}}, "", "", nil
}

// userSigningSignature checks a signature over another local user's master key by the
// uploader's user-signing key.
func userSigningSignature(ctx context.Context, q pgdb.DBTX, sess *Session, own map[string]json.RawMessage, user, keyID string, obj json.RawMessage) ([]storage.KeySignature, spec.MatrixErrorCode, string, error) {
	theirs, err := storage.CrossSigningKeys(ctx, q, user)
	if err != nil {
		return nil, "", "", err
	}
	masterRaw, ok := theirs[keyTypeMaster]
	if !ok || crossSigningPublicKey(masterRaw) != keyID {
		return nil, spec.ErrorNotFound, "only another user's master key can be signed", nil
	}
	if !sameKey(obj, masterRaw) {
		return nil, spec.ErrorInvalidParam, "the signed object is not the stored master key", nil
	}
	uskRaw, ok := own[keyTypeUserSigning]
	if !ok {
		return nil, errInvalidSignature, "the signer has no user-signing key", nil
	}
	uskPub := crossSigningPublicKey(uskRaw)
	pub, _ := decodeEd25519(uskPub)
	sigKeyID := "ed25519:" + uskPub
	sig := signedBy(obj, sess.UserID, sigKeyID)
	if sig == "" || pub == nil || gomatrixserverlib.VerifyJSON(sess.UserID, gomatrixserverlib.KeyID(sigKeyID), pub, obj) != nil {
		return nil, errInvalidSignature, "the master key must be signed by the user-signing key", nil
	}
	return []storage.KeySignature{{TargetUserID: user, TargetKeyID: keyID, SignerUserID: sess.UserID, SignerKeyID: sigKeyID, Signature: sig}}, "", "", nil
}

// noNUL answers 400 to requests carrying a NUL character in the path, the query or a JSON
// string of the body: PostgreSQL stores neither in TEXT nor in JSONB, and the client would
// otherwise see a 500.
func noNUL(fn authedHandler) authedHandler {
	return func(w http.ResponseWriter, r *http.Request, sess *Session) error {
		if strings.ContainsRune(r.URL.Path, 0) || strings.Contains(r.URL.RawQuery, "%00") {
			return mxhttp.InvalidParam("the request path must not contain NUL characters")
		}
		if r.Body == nil {
			return fn(w, r, sess)
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, mxhttp.MaxBody+1))
		if err != nil {
			return mxhttp.BadJSON("reading request body: %v", truncate(err.Error(), 200))
		}
		if hasJSONNUL(b) {
			return mxhttp.BadJSON("the request body must not contain NUL characters")
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		return fn(w, r, sess)
	}
}

// hasJSONNUL reports whether a JSON text holds a NUL, raw or escaped as \u0000.
func hasJSONNUL(b []byte) bool {
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case 0:
			return true
		case '\\':
			if i+6 <= len(b) && b[i+1] == 'u' && string(b[i+2:i+6]) == "0000" {
				return true
			}
			i++ // skip the escaped character, which may be a backslash
		}
	}
	return false
}
