// Package tenant is the control schema: the tenants of an installation, their identity
// (server name, signing key), settings and lifecycle, and the lease that gives one shard
// ownership of a tenant at a time.
package tenant

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// ControlSchema holds the tenants table.
const ControlSchema = "atoll_control"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Status is a tenant's lifecycle state.
type Status string

const (
	Active    Status = "active"
	Suspended Status = "suspended"
)

// Registration modes.
const (
	RegistrationOpen         = "open"
	RegistrationToken        = "token"
	RegistrationSharedSecret = "shared_secret"
	RegistrationClosed       = "closed"
)

// Settings are a tenant's own policies.
type Settings struct {
	// Registration is open, token, shared_secret or closed. The Synapse-compatible admin
	// registration with SharedSecret works in every mode when the secret is set.
	Registration string `json:"registration"`
	SharedSecret string `json:"shared_secret,omitempty"`
	// MaxUsers caps registered users; 0 means unlimited.
	MaxUsers int `json:"max_users,omitempty"`
	// MessagesPerSecond limits sends per user; 0 means the shard default.
	MessagesPerSecond float64 `json:"messages_per_second,omitempty"`
	// DefaultRoomVersion for rooms created without one.
	DefaultRoomVersion string `json:"default_room_version,omitempty"`
}

// Validate reports whether the settings are usable.
func (s Settings) Validate() error {
	switch s.Registration {
	case RegistrationOpen, RegistrationToken, RegistrationClosed:
	case RegistrationSharedSecret:
		if s.SharedSecret == "" {
			return errors.New("registration shared_secret needs a shared secret")
		}
	default:
		return fmt.Errorf("registration %q is not one of open, token, shared_secret, closed", s.Registration)
	}
	if s.MaxUsers < 0 {
		return errors.New("max_users must not be negative")
	}
	if s.MessagesPerSecond < 0 {
		return errors.New("messages_per_second must not be negative")
	}
	return nil
}

// Tenant is one homeserver.
type Tenant struct {
	ID         string
	ServerName spec.ServerName
	ClientHost string
	Status     Status
	Settings   Settings
	KeyID      string
	PrivateKey ed25519.PrivateKey
	CreatedAt  time.Time
	// Owner and FencingToken describe the lease; Owner is empty when no shard holds it.
	Owner        string
	LeaseUntil   time.Time
	FencingToken int64
}

// Schema is the PostgreSQL schema holding the tenant's data.
func (t *Tenant) Schema() string { return pgdb.SchemaName(t.ID) }

// Errors callers distinguish.
var (
	ErrNotFound     = errors.New("tenant not found")
	ErrExists       = errors.New("tenant id or host already in use")
	ErrNotSuspended = errors.New("tenant must be suspended before it is purged")
	ErrLeaseHeld    = errors.New("tenant lease held by another shard")
)

var (
	idPattern   = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)
	hostPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*(:[0-9]{1,5})?$`)
)

// ValidateID checks a tenant ID: lower-case letters, digits and _, starting with a letter.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("tenant id %q must match %s", id, idPattern)
	}
	return nil
}

// ValidateHost checks a server name or client host name (DNS name, optional port).
func ValidateHost(h string) error {
	if !hostPattern.MatchString(h) {
		return fmt.Errorf("host %q is not a lower-case DNS name with an optional port", h)
	}
	return nil
}

// Registry reads and changes the control schema.
type Registry struct {
	pool *pgxpool.Pool
}

// Open migrates the control schema and returns a registry on it.
func Open(ctx context.Context, pool *pgxpool.Pool) (*Registry, error) {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("control migrations: %w", err)
	}
	if _, err := pgdb.Migrate(ctx, pool, ControlSchema, sub); err != nil {
		return nil, err
	}
	return &Registry{pool: pool}, nil
}

// NewSpec describes a tenant to create.
type NewSpec struct {
	ID         string
	ServerName string
	ClientHost string
	Settings   Settings
}

const selectColumns = `id, server_name, coalesce(client_host, ''), status, settings, key_id, signing_seed,
	created_at, coalesce(owner_shard, ''), coalesce(lease_until, 'epoch'), fencing_token`

func scanTenant(row pgx.Row) (*Tenant, error) {
	var (
		t        Tenant
		settings []byte
		seed     []byte
		server   string
	)
	if err := row.Scan(&t.ID, &server, &t.ClientHost, &t.Status, &settings, &t.KeyID, &seed,
		&t.CreatedAt, &t.Owner, &t.LeaseUntil, &t.FencingToken); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	t.ServerName = spec.ServerName(server)
	if err := json.Unmarshal(settings, &t.Settings); err != nil {
		return nil, fmt.Errorf("decode settings of %s: %w", t.ID, err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("signing key of %s has %d bytes", t.ID, len(seed))
	}
	t.PrivateKey = ed25519.NewKeyFromSeed(seed)
	return &t, nil
}

// Create adds a tenant with a fresh signing key and creates and migrates its schema.
func (r *Registry) Create(ctx context.Context, s NewSpec) (*Tenant, error) {
	if err := ValidateID(s.ID); err != nil {
		return nil, err
	}
	if err := ValidateHost(s.ServerName); err != nil {
		return nil, err
	}
	if s.ClientHost != "" {
		if err := ValidateHost(s.ClientHost); err != nil {
			return nil, err
		}
	}
	if s.Settings.Registration == "" {
		s.Settings.Registration = RegistrationClosed
	}
	if err := s.Settings.Validate(); err != nil {
		return nil, err
	}
	settings, err := json.Marshal(s.Settings)
	if err != nil {
		return nil, fmt.Errorf("encode settings: %w", err)
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	var kid [4]byte
	_, _ = rand.Read(kid[:])
	keyID := "ed25519:" + strings.TrimRight(base64.RawURLEncoding.EncodeToString(kid[:]), "=")
	var clientHost *string
	if s.ClientHost != "" {
		clientHost = &s.ClientHost
	}
	// Host names must not collide across the two columns either: a request's Host picks one tenant.
	var clash bool
	if err := r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM atoll_control.tenants
		WHERE server_name = ANY($1) OR client_host = ANY($1))`,
		[]string{s.ServerName, s.ClientHost}).Scan(&clash); err != nil {
		return nil, fmt.Errorf("check hosts: %w", err)
	}
	if clash {
		return nil, ErrExists
	}
	_, err = r.pool.Exec(ctx, `INSERT INTO atoll_control.tenants (id, server_name, client_host, settings, key_id, signing_seed)
		VALUES ($1, $2, $3, $4, $5, $6)`, s.ID, s.ServerName, clientHost, settings, keyID, seed)
	if pgdb.IsUniqueViolation(err) {
		return nil, ErrExists
	}
	if err != nil {
		return nil, fmt.Errorf("insert tenant %s: %w", s.ID, err)
	}
	if _, err := storage.Migrate(ctx, r.pool, pgdb.SchemaName(s.ID)); err != nil {
		return nil, fmt.Errorf("migrate tenant %s: %w", s.ID, err)
	}
	return r.Get(ctx, s.ID)
}

// Get returns one tenant.
func (r *Registry) Get(ctx context.Context, id string) (*Tenant, error) {
	return scanTenant(r.pool.QueryRow(ctx, `SELECT `+selectColumns+` FROM atoll_control.tenants WHERE id = $1`, id))
}

// ByHost returns the tenant whose server name or client host is host (compared without
// case; a port is part of the name only when the tenant's name has one).
func (r *Registry) ByHost(ctx context.Context, host string) (*Tenant, error) {
	host = strings.ToLower(host)
	return scanTenant(r.pool.QueryRow(ctx, `SELECT `+selectColumns+` FROM atoll_control.tenants
		WHERE server_name = $1 OR client_host = $1 LIMIT 1`, host))
}

// List returns tenants ordered by ID, after the given ID, at most limit of them.
func (r *Registry) List(ctx context.Context, after string, limit int) ([]*Tenant, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	rows, err := r.pool.Query(ctx, `SELECT `+selectColumns+` FROM atoll_control.tenants
		WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	defer rows.Close()
	var out []*Tenant
	for rows.Next() {
		t, err := scanTenant(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// Count returns how many tenants exist.
func (r *Registry) Count(ctx context.Context) (int, error) {
	var n int
	err := r.pool.QueryRow(ctx, `SELECT count(*) FROM atoll_control.tenants`).Scan(&n)
	return n, err
}

// UpdateSettings replaces a tenant's settings.
func (r *Registry) UpdateSettings(ctx context.Context, id string, s Settings) error {
	if err := s.Validate(); err != nil {
		return err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode settings: %w", err)
	}
	tag, err := r.pool.Exec(ctx, `UPDATE atoll_control.tenants SET settings = $2 WHERE id = $1`, id, b)
	if err != nil {
		return fmt.Errorf("update settings of %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// SetStatus suspends or resumes a tenant.
func (r *Registry) SetStatus(ctx context.Context, id string, s Status) error {
	tag, err := r.pool.Exec(ctx, `UPDATE atoll_control.tenants SET status = $2,
		suspended_at = CASE WHEN $2 = 'suspended' THEN now() ELSE NULL END WHERE id = $1`, id, string(s))
	if err != nil {
		return fmt.Errorf("set status of %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// Purge deletes a suspended tenant and drops its schema: the second step of deletion.
func (r *Registry) Purge(ctx context.Context, id string) error {
	return pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		var status Status
		err := tx.QueryRow(ctx, `SELECT status FROM atoll_control.tenants WHERE id = $1 FOR UPDATE`, id).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("lock tenant %s: %w", id, err)
		}
		if status != Suspended {
			return ErrNotSuspended
		}
		if _, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{pgdb.SchemaName(id)}.Sanitize()+" CASCADE"); err != nil {
			return fmt.Errorf("drop schema of %s: %w", id, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM atoll_control.tenants WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete tenant %s: %w", id, err)
		}
		return nil
	})
}

// AcquireLease makes shard the owner of tenant id until now+d, unless another shard holds an
// unexpired lease. Each acquisition by a new owner increments the fencing token, which writes
// carry so a shard that lost its lease cannot write.
func (r *Registry) AcquireLease(ctx context.Context, id, shard string, d time.Duration) (int64, error) {
	var token int64
	err := r.pool.QueryRow(ctx, `UPDATE atoll_control.tenants SET
			fencing_token = CASE WHEN owner_shard IS DISTINCT FROM $2 THEN fencing_token + 1 ELSE fencing_token END,
			owner_shard = $2,
			lease_until = now() + make_interval(secs => $3)
		WHERE id = $1 AND (owner_shard IS NULL OR owner_shard = $2 OR lease_until < now())
		RETURNING fencing_token`, id, shard, d.Seconds()).Scan(&token)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, gerr := r.Get(ctx, id); errors.Is(gerr, ErrNotFound) {
			return 0, ErrNotFound
		}
		return 0, ErrLeaseHeld
	}
	if err != nil {
		return 0, fmt.Errorf("acquire lease on %s: %w", id, err)
	}
	return token, nil
}

// RenewLeases extends every lease shard holds and returns the IDs it still owns.
func (r *Registry) RenewLeases(ctx context.Context, shard string, d time.Duration) ([]string, error) {
	rows, err := r.pool.Query(ctx, `UPDATE atoll_control.tenants SET lease_until = now() + make_interval(secs => $2)
		WHERE owner_shard = $1 RETURNING id`, shard, d.Seconds())
	if err != nil {
		return nil, fmt.Errorf("renew leases of %s: %w", shard, err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// ReleaseLease gives up shard's lease on id, so another shard may take the tenant at once.
func (r *Registry) ReleaseLease(ctx context.Context, id, shard string) error {
	_, err := r.pool.Exec(ctx, `UPDATE atoll_control.tenants SET owner_shard = NULL, lease_until = NULL
		WHERE id = $1 AND owner_shard = $2`, id, shard)
	if err != nil {
		return fmt.Errorf("release lease on %s: %w", id, err)
	}
	return nil
}

// RegisterShard records where shard can be reached, for forwarding.
func (r *Registry) RegisterShard(ctx context.Context, name, advertiseURL string) error {
	_, err := r.pool.Exec(ctx, `INSERT INTO atoll_control.shards (name, advertise_url) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET advertise_url = $2, heartbeat = now()`, name, advertiseURL)
	if err != nil {
		return fmt.Errorf("register shard %s: %w", name, err)
	}
	return nil
}

// ShardURL returns the advertised URL of shard name.
func (r *Registry) ShardURL(ctx context.Context, name string) (string, error) {
	var u string
	err := r.pool.QueryRow(ctx, `SELECT advertise_url FROM atoll_control.shards WHERE name = $1`, name).Scan(&u)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("shard %s: %w", name, ErrNotFound)
	}
	return u, err
}
