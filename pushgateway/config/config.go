// Package config loads and validates the push gateway's YAML configuration.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// App types.
const (
	TypeAPNs        = "apns"
	TypeFCM         = "fcm"
	TypeWebPush     = "webpush"
	TypeUnifiedPush = "unifiedpush"
)

// Config is the whole push gateway configuration.
type Config struct {
	Listen        string `yaml:"listen"`
	MetricsListen string `yaml:"metrics_listen"`
	MaxBodyBytes  int64  `yaml:"max_body_bytes"`
	// NotifyTimeout bounds the time spent on one notify request, retries included.
	NotifyTimeout time.Duration `yaml:"notify_timeout"`
	// InitialBackoff is the first retry delay; it doubles up to MaxBackoff.
	InitialBackoff time.Duration   `yaml:"initial_backoff"`
	MaxBackoff     time.Duration   `yaml:"max_backoff"`
	Dedup          Dedup           `yaml:"dedup"`
	Apps           map[string]*App `yaml:"apps"`
}

// Dedup configures the cache that suppresses re-sending a notification a
// homeserver retries.
type Dedup struct {
	TTL        time.Duration `yaml:"ttl"`
	MaxEntries int           `yaml:"max_entries"`
}

// App is one app ID (or glob of app IDs) and how to push to it.
type App struct {
	Type string `yaml:"type"`
	// MaxConcurrency caps simultaneous in-flight sends for this app.
	MaxConcurrency int          `yaml:"max_concurrency"`
	APNs           *APNs        `yaml:"apns"`
	FCM            *FCM         `yaml:"fcm"`
	WebPush        *WebPush     `yaml:"webpush"`
	UnifiedPush    *UnifiedPush `yaml:"unifiedpush"`
}

// APNs options. Either token auth (KeyFile, KeyID, TeamID) or certificate
// auth (CertificateFile, PrivateKeyFile).
type APNs struct {
	Platform        string        `yaml:"platform"` // sandbox or production
	Endpoint        string        `yaml:"endpoint"` // overrides Platform's host
	Topic           string        `yaml:"topic"`
	PushType        string        `yaml:"push_type"`
	Expiration      time.Duration `yaml:"expiration"` // 0: deliver once or drop
	CollapseByRoom  bool          `yaml:"collapse_by_room"`
	KeyFile         string        `yaml:"key_file"`
	KeyID           string        `yaml:"key_id"`
	TeamID          string        `yaml:"team_id"`
	CertificateFile string        `yaml:"certificate_file"`
	PrivateKeyFile  string        `yaml:"private_key_file"`
	// CAFile adds trusted roots (tests, TLS-inspecting egress proxies).
	CAFile string `yaml:"ca_file"`
}

// FCM options for the HTTP v1 API.
type FCM struct {
	ServiceAccountFile string `yaml:"service_account_file"`
	ProjectID          string `yaml:"project_id"` // default: the service account's
	Endpoint           string `yaml:"endpoint"`   // default: https://fcm.googleapis.com
}

// WebPush options (RFC 8030/8291/8292).
type WebPush struct {
	VAPIDPrivateKeyFile string        `yaml:"vapid_private_key_file"`
	VAPIDContact        string        `yaml:"vapid_contact"` // mailto: or https: URI
	AllowedEndpoints    []string      `yaml:"allowed_endpoints"`
	TTL                 time.Duration `yaml:"ttl"`
	// AllowPrivateAddressesForTests lets endpoints resolve to loopback and
	// private addresses. Never set it in production.
	AllowPrivateAddressesForTests bool `yaml:"allow_private_addresses_for_tests"`
}

// UnifiedPush options: plain JSON POSTs to a UnifiedPush distributor.
type UnifiedPush struct {
	AllowedEndpoints              []string `yaml:"allowed_endpoints"`
	AllowPrivateAddressesForTests bool     `yaml:"allow_private_addresses_for_tests"`
}

// Defaults.
const (
	DefaultListen         = ":8095"
	DefaultMetricsListen  = ":9092"
	DefaultMaxBodyBytes   = 64 << 10
	DefaultNotifyTimeout  = 10 * time.Second
	DefaultInitialBackoff = 200 * time.Millisecond
	DefaultMaxBackoff     = 3 * time.Second
	DefaultDedupTTL       = 15 * time.Minute
	DefaultDedupEntries   = 100_000
	DefaultConcurrency    = 64
	DefaultWebPushTTL     = 24 * time.Hour
)

// Load reads, strictly decodes, defaults and validates the file at p.
func Load(p string) (*Config, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", p, err)
	}
	return c, nil
}

// Parse strictly decodes YAML, applies defaults and validates.
func Parse(b []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty configuration")
		}
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := c.Complete(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Complete fills in defaults and validates; Parse calls it, and code that
// builds a Config directly (tests) must too.
func (c *Config) Complete() error {
	c.setDefaults()
	return c.Validate()
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.MetricsListen == "" {
		c.MetricsListen = DefaultMetricsListen
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.NotifyTimeout == 0 {
		c.NotifyTimeout = DefaultNotifyTimeout
	}
	if c.InitialBackoff == 0 {
		c.InitialBackoff = DefaultInitialBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.Dedup.TTL == 0 {
		c.Dedup.TTL = DefaultDedupTTL
	}
	if c.Dedup.MaxEntries == 0 {
		c.Dedup.MaxEntries = DefaultDedupEntries
	}
	for _, a := range c.Apps {
		if a == nil {
			continue
		}
		if a.MaxConcurrency == 0 {
			a.MaxConcurrency = DefaultConcurrency
		}
		if a.WebPush != nil && a.WebPush.TTL == 0 {
			a.WebPush.TTL = DefaultWebPushTTL
		}
		if a.APNs != nil && a.APNs.PushType == "" {
			a.APNs.PushType = "alert"
		}
	}
}

// Validate reports every problem found, joined.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.MaxBodyBytes < 0 {
		bad("max_body_bytes must be positive")
	}
	if c.NotifyTimeout < 0 {
		bad("notify_timeout must be positive")
	}
	if c.InitialBackoff < 0 || c.MaxBackoff < 0 || c.MaxBackoff < c.InitialBackoff {
		bad("initial_backoff and max_backoff must be positive, initial_backoff <= max_backoff")
	}
	if c.Dedup.TTL < 0 || c.Dedup.MaxEntries < 0 {
		bad("dedup ttl and max_entries must be positive")
	}
	if len(c.Apps) == 0 {
		bad("apps: at least one app is required")
	}
	ids := make([]string, 0, len(c.Apps))
	for id := range c.Apps {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if err := validateApp(id, c.Apps[id]); err != nil {
			errs = append(errs, fmt.Errorf("apps[%q]: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func validateApp(id string, a *App) error {
	if id == "" {
		return errors.New("empty app ID")
	}
	if _, err := path.Match(id, ""); err != nil {
		return fmt.Errorf("bad app ID glob: %w", err)
	}
	if a == nil {
		return errors.New("empty app")
	}
	if a.MaxConcurrency < 0 {
		return errors.New("max_concurrency must be positive")
	}
	set := 0
	for _, p := range []bool{a.APNs != nil, a.FCM != nil, a.WebPush != nil, a.UnifiedPush != nil} {
		if p {
			set++
		}
	}
	if set > 1 {
		return errors.New("only the options block matching type may be set")
	}
	switch a.Type {
	case TypeAPNs:
		if a.APNs == nil {
			return errors.New("type apns needs an apns block")
		}
		return a.APNs.validate()
	case TypeFCM:
		if a.FCM == nil {
			return errors.New("type fcm needs an fcm block")
		}
		return a.FCM.validate()
	case TypeWebPush:
		if a.WebPush == nil {
			return errors.New("type webpush needs a webpush block")
		}
		return a.WebPush.validate()
	case TypeUnifiedPush:
		if a.UnifiedPush == nil {
			a.UnifiedPush = &UnifiedPush{}
		}
		return validateAllowList(a.UnifiedPush.AllowedEndpoints)
	case "":
		return errors.New("type is required (apns, fcm, webpush or unifiedpush)")
	default:
		return fmt.Errorf("unknown type %q (want apns, fcm, webpush or unifiedpush)", a.Type)
	}
}

func (a *APNs) validate() error {
	var errs []error
	switch a.Platform {
	case "sandbox", "production":
	case "":
		if a.Endpoint == "" {
			errs = append(errs, errors.New("platform (sandbox or production) or endpoint is required"))
		}
	default:
		errs = append(errs, fmt.Errorf("platform %q: want sandbox or production", a.Platform))
	}
	if a.Endpoint != "" {
		if err := validateURL(a.Endpoint); err != nil {
			errs = append(errs, fmt.Errorf("endpoint: %w", err))
		}
	}
	if a.Topic == "" {
		errs = append(errs, errors.New("topic (the app's bundle ID) is required"))
	}
	switch a.PushType {
	case "alert", "background", "voip", "complication", "fileprovider", "mdm", "location", "liveactivity", "pushtotalk":
	default:
		errs = append(errs, fmt.Errorf("push_type %q is not an APNs push type", a.PushType))
	}
	if a.Expiration < 0 {
		errs = append(errs, errors.New("expiration must not be negative"))
	}
	token := a.KeyFile != "" || a.KeyID != "" || a.TeamID != ""
	cert := a.CertificateFile != "" || a.PrivateKeyFile != ""
	switch {
	case token && cert:
		errs = append(errs, errors.New("use either token auth (key_file, key_id, team_id) or certificate auth (certificate_file, private_key_file), not both"))
	case token:
		if a.KeyFile == "" || a.KeyID == "" || a.TeamID == "" {
			errs = append(errs, errors.New("token auth needs key_file, key_id and team_id"))
		}
	case cert:
		if a.CertificateFile == "" || a.PrivateKeyFile == "" {
			errs = append(errs, errors.New("certificate auth needs certificate_file and private_key_file"))
		}
	default:
		errs = append(errs, errors.New("auth is required: key_file, key_id and team_id, or certificate_file and private_key_file"))
	}
	return errors.Join(errs...)
}

func (f *FCM) validate() error {
	var errs []error
	if f.ServiceAccountFile == "" {
		errs = append(errs, errors.New("service_account_file is required"))
	}
	if f.Endpoint != "" {
		if err := validateURL(f.Endpoint); err != nil {
			errs = append(errs, fmt.Errorf("endpoint: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (w *WebPush) validate() error {
	var errs []error
	if w.VAPIDPrivateKeyFile == "" {
		errs = append(errs, errors.New("vapid_private_key_file is required"))
	}
	if !strings.HasPrefix(w.VAPIDContact, "mailto:") && !strings.HasPrefix(w.VAPIDContact, "https://") {
		errs = append(errs, errors.New("vapid_contact must be a mailto: or https: URI"))
	}
	if w.TTL < 0 {
		errs = append(errs, errors.New("ttl must not be negative"))
	}
	if err := validateAllowList(w.AllowedEndpoints); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func validateAllowList(globs []string) error {
	if len(globs) == 0 {
		return errors.New("allowed_endpoints is required: a list of push service host globs")
	}
	for _, g := range globs {
		if g == "" || strings.ContainsAny(g, "/:") {
			return fmt.Errorf("allowed_endpoints: %q must be a host name glob", g)
		}
		if _, err := path.Match(g, ""); err != nil {
			return fmt.Errorf("allowed_endpoints: %q: %w", g, err)
		}
	}
	return nil
}

func validateURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("parse %q: %w", s, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q must be an http(s) URL with a host", s)
	}
	return nil
}

// Match returns the app configured for appID: an exact key first, then
// the longest matching glob (ties broken lexically), so lookups are
// deterministic.
func (c *Config) Match(appID string) (string, *App, bool) {
	if a, ok := c.Apps[appID]; ok {
		return appID, a, true
	}
	best := ""
	for pat := range c.Apps {
		if ok, _ := path.Match(pat, appID); !ok {
			continue
		}
		if best == "" || len(pat) > len(best) || (len(pat) == len(best) && pat < best) {
			best = pat
		}
	}
	if best == "" {
		return "", nil, false
	}
	return best, c.Apps[best], true
}
