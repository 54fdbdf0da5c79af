// Package federation is the Server-Server API of every tenant on a shard: server keys and
// their cache, X-Matrix request signing and verification, server discovery, the inbound
// endpoints, and the durable outbound queue.
package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/tenant"
)

// keyValidity is how long other servers may cache a tenant's key response.
const keyValidity = 7 * 24 * time.Hour

// ServerKeys returns a tenant's signed key response (/_matrix/key/v2/server).
func ServerKeys(t *tenant.Tenant, now time.Time) ([]byte, error) {
	fields := gomatrixserverlib.ServerKeyFields{
		ServerName: t.ServerName,
		VerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
			gomatrixserverlib.KeyID(t.KeyID): {Key: spec.Base64Bytes(t.PrivateKey.Public().(ed25519.PublicKey))},
		},
		OldVerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{},
		ValidUntilTS:  spec.AsTimestamp(now.Add(keyValidity)),
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("encode server keys: %w", err)
	}
	return gomatrixserverlib.SignJSON(string(t.ServerName), gomatrixserverlib.KeyID(t.KeyID), t.PrivateKey, b)
}

// keyDB caches other servers' keys in the control schema.
type keyDB struct {
	pool *pgxpool.Pool
}

func (keyDB) FetcherName() string { return "atoll_control.server_keys" }

func (d keyDB) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	servers := make([]string, 0, len(requests))
	ids := make([]string, 0, len(requests))
	for r := range requests {
		servers = append(servers, string(r.ServerName))
		ids = append(ids, string(r.KeyID))
	}
	rows, err := d.pool.Query(ctx, `SELECT k.server_name, k.key_id, k.public_key, k.valid_until_ts, k.expired_ts
		FROM atoll_control.server_keys k JOIN unnest($1::text[], $2::text[]) AS r(server_name, key_id)
		ON k.server_name = r.server_name AND k.key_id = r.key_id`, servers, ids)
	if err != nil {
		return nil, fmt.Errorf("read cached server keys: %w", err)
	}
	defer rows.Close()
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	for rows.Next() {
		var server, id string
		var key []byte
		var validUntil, expired int64
		if err := rows.Scan(&server, &id, &key, &validUntil, &expired); err != nil {
			return nil, err
		}
		out[gomatrixserverlib.PublicKeyLookupRequest{ServerName: spec.ServerName(server), KeyID: gomatrixserverlib.KeyID(id)}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey:    gomatrixserverlib.VerifyKey{Key: key},
			ValidUntilTS: spec.Timestamp(validUntil),
			ExpiredTS:    spec.Timestamp(expired),
		}
	}
	return out, rows.Err()
}

func (d keyDB) StoreKeys(ctx context.Context, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	for r, res := range results {
		if _, err := d.pool.Exec(ctx, `INSERT INTO atoll_control.server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (server_name, key_id) DO UPDATE
			SET public_key = $3, valid_until_ts = greatest(server_keys.valid_until_ts, $4), expired_ts = $5, fetched_at = now()`,
			string(r.ServerName), string(r.KeyID), []byte(res.Key), int64(res.ValidUntilTS), int64(res.ExpiredTS)); err != nil {
			return fmt.Errorf("store key %s %s: %w", r.ServerName, r.KeyID, err)
		}
	}
	return nil
}

// localKeys answers for tenants of this installation straight from the control schema:
// their keys are ours, no request needed.
type localKeys struct {
	registry *tenant.Registry
}

func (localKeys) FetcherName() string { return "local tenants" }

func (l localKeys) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	for r := range requests {
		t, err := l.registry.ByHost(ctx, string(r.ServerName))
		if err != nil {
			continue // not ours (or not reachable now): another fetcher answers
		}
		if gomatrixserverlib.KeyID(t.KeyID) != r.KeyID {
			continue
		}
		out[r] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey:    gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(t.PrivateKey.Public().(ed25519.PublicKey))},
			ValidUntilTS: spec.AsTimestamp(time.Now().Add(keyValidity)),
			ExpiredTS:    gomatrixserverlib.PublicKeyNotExpired,
		}
	}
	return out, nil
}
