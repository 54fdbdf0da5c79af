package config_test

import (
	"strings"
	"testing"

	"github.com/atoll-matrix/atoll/homeserver/config"
)

func TestFederationListenerTLS(t *testing.T) {
	base := "database:\n  url: postgres://x\nadmin:\n  token: 0123456789abcdef\n"
	for _, tc := range []struct {
		name, yaml, wantErr string
	}{
		{"none", "", ""},
		{"listener and both files", "listen:\n  federation: \":8448\"\ntls:\n  cert_file: /c\n  key_file: /k\n", ""},
		{"listener without tls", "listen:\n  federation: \":8448\"\n", "listen.federation needs tls.cert_file and tls.key_file"},
		{"cert without key", "listen:\n  federation: \":8448\"\ntls:\n  cert_file: /c\n", "tls.cert_file and tls.key_file go together"},
		{"key without cert", "listen:\n  federation: \":8448\"\ntls:\n  key_file: /k\n", "tls.cert_file and tls.key_file go together"},
		{"tls without listener", "tls:\n  cert_file: /c\n  key_file: /k\n", "tls is only used by listen.federation"},
		{"bad address", "listen:\n  federation: \"8448\"\ntls:\n  cert_file: /c\n  key_file: /k\n", `listen.federation: "8448" is not host:port`},
		{"unknown key", "tls:\n  cert: /c\n", "field cert not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Parse([]byte(base + tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if strings.Contains(tc.yaml, "federation") && (c.Listen.Federation != ":8448" || c.TLS.CertFile != "/c" || c.TLS.KeyFile != "/k") {
					t.Fatalf("decoded %+v %+v", c.Listen, c.TLS)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}
