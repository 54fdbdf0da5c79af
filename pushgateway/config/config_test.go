package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/pushgateway/config"
)

const example = `
listen: ":8095"
metrics_listen: ":9092"
max_body_bytes: 65536
notify_timeout: 10s
dedup:
  ttl: 15m
  max_entries: 100000
apps:
  org.example.ios:
    type: apns
    max_concurrency: 32
    apns:
      platform: production
      topic: org.example.ios
      key_file: /secrets/apns/AuthKey.p8
      key_id: ABC123DEFG
      team_id: TEAM123456
  org.example.ios.voip:
    type: apns
    apns:
      platform: sandbox
      topic: org.example.ios.voip
      push_type: voip
      certificate_file: /secrets/apns-voip/tls.crt
      private_key_file: /secrets/apns-voip/tls.key
  org.example.android.*:
    type: fcm
    fcm:
      service_account_file: /secrets/fcm/service-account.json
  org.example.web:
    type: webpush
    webpush:
      vapid_private_key_file: /secrets/vapid/private.pem
      vapid_contact: mailto:ops@example.org
      allowed_endpoints: ["*.push.services.mozilla.com", "fcm.googleapis.com", "*.notify.windows.com", "web.push.apple.com"]
  org.unifiedpush.*:
    type: unifiedpush
    unifiedpush:
      allowed_endpoints: ["ntfy.example.org"]
`

func TestParseExample(t *testing.T) {
	c, err := config.Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if c.NotifyTimeout != 10*time.Second || c.Apps["org.example.ios"].MaxConcurrency != 32 ||
		c.Apps["org.example.android.*"].MaxConcurrency != config.DefaultConcurrency ||
		c.Apps["org.example.ios"].APNs.PushType != "alert" || c.Apps["org.example.web"].WebPush.TTL != config.DefaultWebPushTTL {
		t.Errorf("unexpected config %+v", c)
	}
	matches := []struct{ appID, want string }{
		{"org.example.ios", "org.example.ios"},
		{"org.example.ios.voip", "org.example.ios.voip"},
		{"org.example.android.beta", "org.example.android.*"},
		{"org.unifiedpush.x", "org.unifiedpush.*"},
		{"org.example.android", ""},
		{"com.other", ""},
	}
	for _, m := range matches {
		got, _, ok := c.Match(m.appID)
		if got != m.want || ok != (m.want != "") {
			t.Errorf("Match(%q) = %q %v, want %q", m.appID, got, ok, m.want)
		}
	}
}

func TestLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "push.yaml")
	if err := os.WriteFile(p, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(p); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(p + ".missing"); err == nil || !strings.Contains(err.Error(), "read config") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestValidationErrors(t *testing.T) {
	apns := func(extra string) string {
		return "apps:\n  a:\n    type: apns\n    apns:\n      topic: t\n" + extra
	}
	tokenAuth := "      key_file: k\n      key_id: i\n      team_id: t\n"
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"empty", ``, []string{"empty configuration"}},
		{"unknown top-level key", "listen: x\nlisten_addr: y\napps: {}", []string{"field listen_addr not found"}},
		{"unknown app key", "apps:\n  a:\n    type: fcm\n    fcm:\n      service_account_file: f\n      api_key: x\n", []string{"field api_key not found"}},
		{"wrong type", "max_body_bytes: lots\napps: {}", []string{"cannot unmarshal"}},
		{"bad duration", "notify_timeout: soon\napps: {}", []string{"line 1", "time.Duration"}},
		{"no apps", "listen: ':1'", []string{"at least one app"}},
		{"app without type", "apps:\n  a: {}\n", []string{`apps["a"]`, "type is required"}},
		{"unknown type", "apps:\n  a:\n    type: gcm\n", []string{"unknown type \"gcm\""}},
		{"type without block", "apps:\n  a:\n    type: fcm\n", []string{"needs an fcm block"}},
		{"mismatched block", "apps:\n  a:\n    type: fcm\n    fcm:\n      service_account_file: f\n    apns:\n      topic: t\n", []string{"only the options block"}},
		{"bad glob", "apps:\n  'a[':\n    type: unifiedpush\n    unifiedpush:\n      allowed_endpoints: [x]\n", []string{"bad app ID glob"}},
		{"apns no platform", apns(tokenAuth), []string{"platform (sandbox or production) or endpoint is required"}},
		{"apns bad platform", apns("      platform: staging\n" + tokenAuth), []string{`platform "staging"`}},
		{"apns no auth", apns("      platform: sandbox\n"), []string{"auth is required"}},
		{"apns both auths", apns("      platform: sandbox\n" + tokenAuth + "      certificate_file: c\n      private_key_file: k\n"), []string{"not both"}},
		{"apns partial token", apns("      platform: sandbox\n      key_file: k\n"), []string{"key_file, key_id and team_id"}},
		{"apns bad push type", apns("      platform: sandbox\n      push_type: loud\n" + tokenAuth), []string{`push_type "loud"`}},
		{"apns bad endpoint", apns("      endpoint: ftp://x\n" + tokenAuth), []string{"http(s) URL"}},
		{"apns no topic", "apps:\n  a:\n    type: apns\n    apns:\n      platform: sandbox\n" + tokenAuth, []string{"topic"}},
		{"fcm no file", "apps:\n  a:\n    type: fcm\n    fcm: {}\n", []string{"service_account_file is required"}},
		{"webpush incomplete", "apps:\n  a:\n    type: webpush\n    webpush: {}\n", []string{"vapid_private_key_file is required", "vapid_contact", "allowed_endpoints is required"}},
		{"webpush url in allow-list", "apps:\n  a:\n    type: webpush\n    webpush:\n      vapid_private_key_file: f\n      vapid_contact: mailto:x@y\n      allowed_endpoints: ['https://push.example.org/']\n", []string{"host name glob"}},
		{"unifiedpush without allow-list", "apps:\n  a:\n    type: unifiedpush\n", []string{"allowed_endpoints is required"}},
		{"negative backoff", "initial_backoff: -1s\napps:\n  a:\n    type: unifiedpush\n    unifiedpush:\n      allowed_endpoints: [x]\n", []string{"initial_backoff"}},
		{"several errors reported together", "apps:\n  a:\n    type: fcm\n    fcm: {}\n  b:\n    type: nope\n", []string{`apps["a"]`, `apps["b"]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
