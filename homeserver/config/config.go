// Package config is the atoll-homeserver configuration file: one YAML document decoded
// strictly into Config, validated before anything starts.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole atoll-homeserver configuration.
type Config struct {
	Shard      Shard      `yaml:"shard"`
	Listen     Listen     `yaml:"listen"`
	Database   Database   `yaml:"database"`
	Redis      Redis      `yaml:"redis"`
	Admin      Admin      `yaml:"admin"`
	Tenants    Tenants    `yaml:"tenants"`
	Push       Push       `yaml:"push"`
	Media      Media      `yaml:"media"`
	Federation Federation `yaml:"federation"`
	TLS        TLS        `yaml:"tls"`
	Log        Log        `yaml:"log"`
}

// TLS is the certificate of the federation listener (listen.federation): one PEM certificate
// chain and its key, both or neither. The certificate should name every tenant server name
// that other servers reach on that listener (a wildcard, or the names served).
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Federation configures how tenants reach other Matrix servers.
type Federation struct {
	// LocalURL is where any shard of this installation answers (the shards' Service); requests
	// between tenants of the installation go there. Default: this process's client listener.
	LocalURL string `yaml:"local_url"`
	// Servers maps server names to base URLs, bypassing discovery (private federations, tests).
	Servers map[string]string `yaml:"servers"`
	// TrustRootsFile is a PEM bundle of CAs trusted for other servers' TLS certificates, in
	// addition to the system's.
	TrustRootsFile string `yaml:"trust_roots_file"`
	// MaxBackoff caps the wait before retrying a destination that keeps failing (default 1h).
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// Media names the media sidecar whose buckets follow tenants' lifecycle.
type Media struct {
	// URL of the media sidecar beside this shard (http://127.0.0.1:8090 in a shard pod); empty
	// when no sidecar runs. Tenant creation creates the tenant's bucket through it, purging
	// deletes every object and the bucket before the tenant's schema goes.
	URL string `yaml:"url"`
}

// Push restricts where HTTP pushers may deliver: push gateway URLs come from users.
type Push struct {
	// AllowedHosts are host globs of push gateways; empty allows any public host.
	AllowedHosts []string `yaml:"allowed_hosts"`
	// AllowHTTP permits plain-HTTP gateways (an in-cluster gateway).
	AllowHTTP bool `yaml:"allow_http"`
	// AllowPrivate permits gateways on private and loopback addresses (an in-cluster gateway).
	AllowPrivate bool `yaml:"allow_private"`
}

// Shard names this process among the shards sharing one control schema.
type Shard struct {
	// Name is unique per shard (the StatefulSet pod name); it owns tenant leases.
	Name string `yaml:"name"`
	// AdvertiseURL is where other shards forward requests for tenants this shard owns.
	AdvertiseURL string `yaml:"advertise_url"`
}

// Listen holds the listener addresses. Client serves the Client-Server API, well-known and
// plain-HTTP federation behind an ingress; Federation (optional, with tls) serves the same
// handler over TLS, for servers that reach tenants directly on a port such as 8448; Admin and
// Metrics are never exposed publicly.
type Listen struct {
	Client     string `yaml:"client"`
	Federation string `yaml:"federation"`
	Admin      string `yaml:"admin"`
	Metrics    string `yaml:"metrics"`
}

// Database is the PostgreSQL holding the control schema and every tenant schema.
type Database struct {
	URL      string `yaml:"url"`
	URLFile  string `yaml:"url_file"`
	MaxConns int32  `yaml:"max_conns"`
}

// Redis is the ephemeral store for wake-ups, typing and rate limits.
type Redis struct {
	URL     string `yaml:"url"`
	URLFile string `yaml:"url_file"`
}

// Admin protects the admin API listener.
type Admin struct {
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
}

// Tenants bounds what loaded tenants may cost a shard.
type Tenants struct {
	// IdleEvict is how long a tenant stays loaded without requests.
	IdleEvict time.Duration `yaml:"idle_evict"`
	// MaxLoaded caps loaded tenants per shard; the least recently used is evicted first.
	MaxLoaded int `yaml:"max_loaded"`
	// LeaseDuration is how long a tenant lease lasts without renewal.
	LeaseDuration time.Duration `yaml:"lease_duration"`
}

// Log selects the log format and level.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json, text
}

// Default returns the configuration used for fields a file leaves out.
func Default() Config {
	return Config{
		Shard:      Shard{Name: "shard-0"},
		Listen:     Listen{Client: ":8008", Admin: "127.0.0.1:8081", Metrics: ":9090"},
		Database:   Database{MaxConns: 20},
		Tenants:    Tenants{IdleEvict: 10 * time.Minute, MaxLoaded: 20000, LeaseDuration: 30 * time.Second},
		Log:        Log{Level: "info", Format: "json"},
		Federation: Federation{MaxBackoff: time.Hour},
	}
}

// Load reads, strictly decodes, resolves secret files and validates the file at path.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return Parse(b)
}

// Parse decodes b over the defaults; unknown keys are an error.
func Parse(b []byte) (Config, error) { return ParseWithShard(b, "") }

// ParseWithShard is Parse with the shard name set from the command line when given: a
// StatefulSet renders one file for every pod and passes each pod's name.
func ParseWithShard(b []byte, shardName string) (Config, error) {
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("decode config: %w", err)
	}
	if shardName != "" {
		c.Shard.Name = shardName
	}
	if err := c.resolveFiles(); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func (c *Config) resolveFiles() error {
	for _, f := range []struct {
		name  string
		value *string
		file  string
	}{
		{"database.url_file", &c.Database.URL, c.Database.URLFile},
		{"redis.url_file", &c.Redis.URL, c.Redis.URLFile},
		{"admin.token_file", &c.Admin.Token, c.Admin.TokenFile},
	} {
		if f.file == "" {
			continue
		}
		b, err := os.ReadFile(f.file)
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		*f.value = strings.TrimSpace(string(b))
	}
	return nil
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Shard.Name == "" {
		errs = append(errs, errors.New("shard.name is required"))
	}
	for name, addr := range map[string]string{"listen.client": c.Listen.Client, "listen.federation": c.Listen.Federation,
		"listen.admin": c.Listen.Admin, "listen.metrics": c.Listen.Metrics} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not host:port", name, addr))
		}
	}
	if c.Listen.Client == "" {
		errs = append(errs, errors.New("listen.client is required"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("tls.cert_file and tls.key_file go together"))
	}
	if c.Listen.Federation != "" && c.TLS.CertFile == "" {
		errs = append(errs, errors.New("listen.federation needs tls.cert_file and tls.key_file"))
	}
	if c.Listen.Federation == "" && (c.TLS.CertFile != "" || c.TLS.KeyFile != "") {
		errs = append(errs, errors.New("tls is only used by listen.federation, which is not set"))
	}
	if c.Database.URL == "" {
		errs = append(errs, errors.New("database.url or database.url_file is required"))
	}
	if c.Database.MaxConns < 2 {
		errs = append(errs, errors.New("database.max_conns must be at least 2"))
	}
	if c.Listen.Admin != "" && len(c.Admin.Token) < 16 {
		errs = append(errs, errors.New("admin.token (or admin.token_file) must be at least 16 characters when listen.admin is set"))
	}
	if c.Tenants.IdleEvict <= 0 {
		errs = append(errs, errors.New("tenants.idle_evict must be positive"))
	}
	if c.Tenants.MaxLoaded <= 0 {
		errs = append(errs, errors.New("tenants.max_loaded must be positive"))
	}
	if c.Tenants.LeaseDuration < time.Second {
		errs = append(errs, errors.New("tenants.lease_duration must be at least 1s"))
	}
	if c.Federation.MaxBackoff < time.Second {
		errs = append(errs, errors.New("federation.max_backoff must be at least 1s"))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level))
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q is not json or text", c.Log.Format))
	}
	return errors.Join(errs...)
}
