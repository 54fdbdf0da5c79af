// Package config loads and validates the media sidecar's YAML configuration
// (/etc/atoll/media.yaml) and the secrets it names by file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Bucket modes.
const (
	// BucketModeBucket stores each tenant's objects in a bucket of its own.
	BucketModeBucket = "bucket"
	// BucketModePrefix stores each tenant's objects under "<tenant>/" in one shared bucket.
	BucketModePrefix = "prefix"
)

// Thumbnail methods.
const (
	MethodCrop  = "crop"
	MethodScale = "scale"
)

// Config is the whole media sidecar configuration.
type Config struct {
	Listen        string `yaml:"listen"`
	MetricsListen string `yaml:"metrics_listen"`
	// HomeserverURL is the homeserver's admin listener, used to authenticate requests.
	HomeserverURL       string `yaml:"homeserver_url"`
	HomeserverTokenFile string `yaml:"homeserver_token_file"`
	// AuthCacheTTL and AuthCacheSize bound the cache of successful authentications.
	AuthCacheTTL  time.Duration `yaml:"auth_cache_ttl"`
	AuthCacheSize int           `yaml:"auth_cache_size"`

	S3       S3       `yaml:"s3"`
	Database Database `yaml:"database"`

	// MaxUploadBytes is the largest upload accepted (413 M_TOO_LARGE above it).
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// UserQuotaBytes caps the bytes of local media one user may own; 0 means no quota.
	UserQuotaBytes int64 `yaml:"user_quota_bytes"`
	// PendingUploadTTL is how long a /create'd media ID waits for its content.
	PendingUploadTTL time.Duration `yaml:"pending_upload_ttl"`
	// MaxPendingUploads caps a user's outstanding /create'd media IDs.
	MaxPendingUploads int `yaml:"max_pending_uploads"`
	// LegacyMediaBefore is the authenticated-media cut-off: the unauthenticated
	// /_matrix/media/v3/download and /thumbnail endpoints serve only media created before it.
	// Unset (the zero time) means they serve nothing.
	LegacyMediaBefore time.Time `yaml:"legacy_media_before"`
	// RequestTimeout bounds one S3-backed request that is not a transfer (metadata, small objects).
	RequestTimeout time.Duration `yaml:"request_timeout"`

	Thumbnails Thumbnails `yaml:"thumbnails"`
	Preview    Preview    `yaml:"preview"`
	Federation Federation `yaml:"federation"`
	Retention  Retention  `yaml:"retention"`
}

// S3 says where objects go.
type S3 struct {
	Endpoint      string `yaml:"endpoint"` // host:port
	Secure        bool   `yaml:"secure"`
	Region        string `yaml:"region"`
	AccessKeyFile string `yaml:"access_key_file"`
	SecretKeyFile string `yaml:"secret_key_file"`
	BucketMode    string `yaml:"bucket_mode"`
	BucketPrefix  string `yaml:"bucket_prefix"`
	SharedBucket  string `yaml:"shared_bucket"`
	// PartSize is the multipart part size; it is also the upload buffer per transfer.
	PartSize uint64 `yaml:"part_size"`
	// DialTimeout and ResponseHeaderTimeout turn an unreachable or stalled S3 into a 504
	// instead of a hung request; MaxRetries bounds minio-go's retries of idempotent calls.
	DialTimeout           time.Duration `yaml:"dial_timeout"`
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout"`
	MaxRetries            int           `yaml:"max_retries"`
}

// Database names the PostgreSQL database and the schema the sidecar owns in it.
type Database struct {
	URL      string `yaml:"url"`
	URLFile  string `yaml:"url_file"`
	Schema   string `yaml:"schema"`
	MaxConns int32  `yaml:"max_conns"`
}

// ThumbnailSize is one pre-defined thumbnail size.
type ThumbnailSize struct {
	Width  int    `yaml:"width"`
	Height int    `yaml:"height"`
	Method string `yaml:"method"`
}

// Thumbnails bounds thumbnail generation.
type Thumbnails struct {
	Sizes []ThumbnailSize `yaml:"sizes"`
	// MaxSourcePixels refuses to decode images larger than this (decompression bombs).
	MaxSourcePixels int64 `yaml:"max_source_pixels"`
	// MaxSourceBytes refuses to thumbnail files larger than this.
	MaxSourceBytes int64 `yaml:"max_source_bytes"`
	// MaxConcurrent caps images decoded at once, which bounds their memory.
	MaxConcurrent int `yaml:"max_concurrent"`
}

// Preview configures URL previews.
type Preview struct {
	Enabled  bool          `yaml:"enabled"`
	MaxBytes int64         `yaml:"max_bytes"`
	Timeout  time.Duration `yaml:"timeout"`
	// UserAgent is sent with preview fetches.
	UserAgent string `yaml:"user_agent"`
	// AllowPrivateAddressesForTests lets previews reach loopback and private addresses.
	// Never set it in production: it opens the sidecar to server-side request forgery.
	AllowPrivateAddressesForTests bool `yaml:"allow_private_addresses_for_tests"`
}

// Federation configures fetching remote media and serving it to other servers.
type Federation struct {
	Timeout        time.Duration `yaml:"timeout"`
	MaxRemoteBytes int64         `yaml:"max_remote_bytes"`
	// AcceptUnsignedRequests serves /_matrix/federation/v1/media/* without verifying the
	// X-Matrix signature. Tests only: off (the default), the homeserver verifies every
	// federation media request (sidecars/media/hsfed).
	AcceptUnsignedRequests bool `yaml:"accept_unsigned_requests"`
	// AllowPrivateAddresses lets a remote answer's Location be followed to loopback, private
	// and other special addresses. Off, they are refused at dial time, as URL previews are.
	// (Remote servers themselves are reached by the homeserver, under its federation settings.)
	AllowPrivateAddresses bool `yaml:"allow_private_addresses"`
}

// Retention deletes old media periodically. A zero age disables that half.
type Retention struct {
	Interval     time.Duration `yaml:"interval"`
	LocalMaxAge  time.Duration `yaml:"local_max_age"`
	RemoteMaxAge time.Duration `yaml:"remote_max_age"`
	// AbandonedUploadAge aborts S3 multipart uploads older than this (left by a crash, or by
	// an abort that failed while S3 was unreachable).
	AbandonedUploadAge time.Duration `yaml:"abandoned_upload_age"`
}

// DefaultThumbnailSizes are the sizes Matrix clients expect.
func DefaultThumbnailSizes() []ThumbnailSize {
	return []ThumbnailSize{
		{32, 32, MethodCrop}, {96, 96, MethodCrop},
		{320, 240, MethodScale}, {640, 480, MethodScale}, {800, 600, MethodScale},
	}
}

// Default returns a configuration with every default filled in.
func Default() Config {
	return Config{
		Listen:        ":8090",
		MetricsListen: ":9091",
		HomeserverURL: "http://127.0.0.1:8081",
		AuthCacheTTL:  30 * time.Second,
		AuthCacheSize: 10000,
		S3: S3{BucketMode: BucketModeBucket, BucketPrefix: "atoll-", Region: "us-east-1", PartSize: 16 << 20,
			DialTimeout: 5 * time.Second, ResponseHeaderTimeout: 30 * time.Second, MaxRetries: 2},
		Database:          Database{Schema: "atoll_media", MaxConns: 8},
		MaxUploadBytes:    100 << 20,
		PendingUploadTTL:  24 * time.Hour,
		MaxPendingUploads: 32,
		RequestTimeout:    30 * time.Second,
		Thumbnails: Thumbnails{
			Sizes:           DefaultThumbnailSizes(),
			MaxSourcePixels: 32_000_000,
			MaxSourceBytes:  50 << 20,
			MaxConcurrent:   2,
		},
		Preview:    Preview{MaxBytes: 4 << 20, Timeout: 10 * time.Second, UserAgent: "Atoll media preview"},
		Federation: Federation{Timeout: 60 * time.Second, MaxRemoteBytes: 100 << 20},
		Retention:  Retention{Interval: time.Hour, AbandonedUploadAge: 24 * time.Hour},
	}
}

// Load reads and validates the file at path. Unknown keys are errors.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return Parse(data)
}

// Parse decodes YAML strictly over the defaults and validates the result.
func Parse(data []byte) (Config, error) {
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("decode config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate reports every problem found, joined.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Listen == "" {
		bad("listen: required")
	}
	if u, err := url.Parse(c.HomeserverURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("homeserver_url: %q is not an http(s) URL", c.HomeserverURL)
	}
	if c.HomeserverTokenFile == "" {
		bad("homeserver_token_file: required")
	}
	if c.AuthCacheTTL < 0 || c.AuthCacheSize < 0 {
		bad("auth_cache_ttl, auth_cache_size: must not be negative")
	}
	if c.S3.Endpoint == "" || strings.Contains(c.S3.Endpoint, "/") {
		bad("s3.endpoint: want host:port, got %q", c.S3.Endpoint)
	}
	if c.S3.AccessKeyFile == "" || c.S3.SecretKeyFile == "" {
		bad("s3.access_key_file, s3.secret_key_file: required")
	}
	switch c.S3.BucketMode {
	case BucketModeBucket:
		if !validBucketPart(c.S3.BucketPrefix) {
			bad("s3.bucket_prefix: %q may hold only a-z, 0-9, '-' and '.'", c.S3.BucketPrefix)
		}
	case BucketModePrefix:
		if c.S3.SharedBucket == "" || !validBucketPart(c.S3.SharedBucket) || len(c.S3.SharedBucket) < 3 || len(c.S3.SharedBucket) > 63 {
			bad("s3.shared_bucket: a valid bucket name is required in prefix mode")
		}
	default:
		bad("s3.bucket_mode: want %q or %q, got %q", BucketModeBucket, BucketModePrefix, c.S3.BucketMode)
	}
	if c.S3.DialTimeout <= 0 || c.S3.ResponseHeaderTimeout <= 0 || c.S3.MaxRetries < 1 {
		bad("s3: dial_timeout and response_header_timeout must be positive, max_retries at least 1")
	}
	if c.S3.PartSize < 5<<20 {
		bad("s3.part_size: at least 5 MiB (S3's minimum part)")
	}
	if (c.Database.URL == "") == (c.Database.URLFile == "") {
		bad("database: exactly one of url and url_file")
	}
	if c.Database.Schema == "" {
		bad("database.schema: required")
	}
	if c.Database.MaxConns < 1 {
		bad("database.max_conns: at least 1")
	}
	if c.MaxUploadBytes <= 0 {
		bad("max_upload_bytes: must be positive")
	}
	if c.UserQuotaBytes < 0 {
		bad("user_quota_bytes: must not be negative")
	}
	if c.PendingUploadTTL <= 0 || c.MaxPendingUploads <= 0 {
		bad("pending_upload_ttl, max_pending_uploads: must be positive")
	}
	if c.RequestTimeout <= 0 {
		bad("request_timeout: must be positive")
	}
	if len(c.Thumbnails.Sizes) == 0 {
		bad("thumbnails.sizes: at least one")
	}
	for i, s := range c.Thumbnails.Sizes {
		if s.Width < 1 || s.Height < 1 || s.Width > 4096 || s.Height > 4096 {
			bad("thumbnails.sizes[%d]: dimensions must be 1..4096", i)
		}
		if s.Method != MethodCrop && s.Method != MethodScale {
			bad("thumbnails.sizes[%d].method: want crop or scale", i)
		}
	}
	if c.Thumbnails.MaxSourcePixels <= 0 || c.Thumbnails.MaxSourceBytes <= 0 || c.Thumbnails.MaxConcurrent <= 0 {
		bad("thumbnails: max_source_pixels, max_source_bytes and max_concurrent must be positive")
	}
	if c.Preview.Enabled && (c.Preview.MaxBytes <= 0 || c.Preview.Timeout <= 0) {
		bad("preview: max_bytes and timeout must be positive")
	}
	if c.Federation.Timeout <= 0 || c.Federation.MaxRemoteBytes <= 0 {
		bad("federation: timeout and max_remote_bytes must be positive")
	}
	if c.Retention.Interval <= 0 || c.Retention.LocalMaxAge < 0 || c.Retention.RemoteMaxAge < 0 || c.Retention.AbandonedUploadAge <= 0 {
		bad("retention: interval must be positive and ages not negative")
	}
	return errors.Join(errs...)
}

func validBucketPart(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Secrets are the values read from the *_file settings.
type Secrets struct {
	HomeserverToken string
	S3AccessKey     string
	S3SecretKey     string
	DatabaseURL     string
}

// ReadSecrets reads every file the configuration names.
func (c *Config) ReadSecrets() (Secrets, error) {
	var s Secrets
	var err error
	if s.HomeserverToken, err = readSecret(c.HomeserverTokenFile); err != nil {
		return Secrets{}, err
	}
	if s.S3AccessKey, err = readSecret(c.S3.AccessKeyFile); err != nil {
		return Secrets{}, err
	}
	if s.S3SecretKey, err = readSecret(c.S3.SecretKeyFile); err != nil {
		return Secrets{}, err
	}
	s.DatabaseURL = c.Database.URL
	if c.Database.URLFile != "" {
		if s.DatabaseURL, err = readSecret(c.Database.URLFile); err != nil {
			return Secrets{}, err
		}
	}
	return s, nil
}

func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("read secret %s: file is empty", path)
	}
	return v, nil
}
