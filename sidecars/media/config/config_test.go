package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atoll-matrix/atoll/sidecars/media/config"
)

const minimal = `
homeserver_token_file: /run/secrets/token
s3:
  endpoint: minio:9000
  access_key_file: /run/secrets/ak
  secret_key_file: /run/secrets/sk
database:
  url_file: /run/secrets/db
`

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{name: "minimal", yaml: minimal},
		{name: "prefix mode", yaml: minimal + "\n" + `legacy_media_before: 2024-09-01T00:00:00Z` + "\n"},
		{name: "unknown key", yaml: minimal + "bogus: 1\n", wantErr: "field bogus not found"},
		{name: "bad mode", yaml: strings.Replace(minimal, "endpoint: minio:9000", "endpoint: minio:9000\n  bucket_mode: nope", 1), wantErr: "s3.bucket_mode"},
		{name: "prefix without bucket", yaml: strings.Replace(minimal, "endpoint: minio:9000", "endpoint: minio:9000\n  bucket_mode: prefix", 1), wantErr: "s3.shared_bucket"},
		{name: "both database urls", yaml: minimal + "  url: postgres://x\n", wantErr: "exactly one of url and url_file"},
		{name: "endpoint with scheme", yaml: strings.Replace(minimal, "minio:9000", "http://minio:9000", 1), wantErr: "s3.endpoint"},
		{name: "bad thumbnail", yaml: minimal + "thumbnails:\n  sizes: [{width: 0, height: 5, method: crop}]\n", wantErr: "thumbnails.sizes[0]"},
		{name: "missing token", yaml: strings.Replace(minimal, "homeserver_token_file: /run/secrets/token", "", 1), wantErr: "homeserver_token_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Parse([]byte(tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse error = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if c.Listen != ":8090" || c.MetricsListen != ":9091" || c.S3.BucketPrefix != "atoll-" || len(c.Thumbnails.Sizes) != 5 {
				t.Fatalf("defaults not applied: %+v", c)
			}
		})
	}
}

func TestReadSecrets(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := config.Default()
	c.HomeserverTokenFile = write("token", "tok\n")
	c.S3.AccessKeyFile = write("ak", "AK")
	c.S3.SecretKeyFile = write("sk", " SK ")
	c.Database.URLFile = write("db", "postgres://db\n")
	s, err := c.ReadSecrets()
	if err != nil {
		t.Fatal(err)
	}
	if s != (config.Secrets{HomeserverToken: "tok", S3AccessKey: "AK", S3SecretKey: "SK", DatabaseURL: "postgres://db"}) {
		t.Fatalf("secrets = %+v", s)
	}
	c.S3.SecretKeyFile = write("empty", "\n")
	if _, err := c.ReadSecrets(); err == nil {
		t.Fatal("empty secret file accepted")
	}
}
