package pushtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/atoll-matrix/atoll/pushgateway/config"
)

// FCMMessage is a message the fake FCM accepted.
type FCMMessage struct {
	Token   string
	Data    map[string]string
	Android map[string]any
}

// FCM is a fake Firebase Cloud Messaging HTTP v1 API with its own OAuth2
// token endpoint: it verifies the RS256 JWT-bearer assertion against the
// service account's public key, issues access tokens and requires one on
// every send.
type FCM struct {
	*script
	URL                string
	ServiceAccountFile string
	Project            string
	Email              string

	t   testing.TB
	pub *rsa.PublicKey

	mu          sync.Mutex
	tokens      map[string]bool
	tokenGrants int
	received    []FCMMessage
}

// NewFCM starts a fake FCM for t and writes a matching service account file.
func NewFCM(t testing.TB) *FCM {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := &FCM{
		script:  newScript(),
		Project: "atoll-test",
		Email:   "push@atoll-test.iam.gserviceaccount.com",
		t:       t,
		pub:     &key.PublicKey,
		tokens:  map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", f.token)
	mux.HandleFunc("POST /v1/projects/{project}/messages:send", f.send)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     f.Project,
		"private_key_id": "kid-1",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   f.Email,
		"token_uri":      srv.URL + "/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	f.ServiceAccountFile = filepath.Join(t.TempDir(), "service-account.json")
	writeFile(t, f.ServiceAccountFile, sa)
	return f
}

// Config returns an app config pointing at the fake.
func (f *FCM) Config() *config.App {
	return &config.App{Type: config.TypeFCM, FCM: &config.FCM{ServiceAccountFile: f.ServiceAccountFile, Endpoint: f.URL}}
}

// TokenGrants returns how many access tokens were issued.
func (f *FCM) TokenGrants() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokenGrants
}

// Received returns the accepted messages.
func (f *FCM) Received() []FCMMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]FCMMessage(nil), f.received...)
}

func (f *FCM) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		f.t.Errorf("fake fcm: bad token request grant_type %q", r.PostForm.Get("grant_type"))
		http.Error(w, `{"error":"unsupported_grant_type"}`, http.StatusBadRequest)
		return
	}
	tok, err := jwt.Parse(r.PostForm.Get("assertion"), func(*jwt.Token) (any, error) { return f.pub, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(f.Email), jwt.WithAudience(f.URL+"/token"),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		f.t.Errorf("fake fcm: assertion: %v", err)
		http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
		return
	}
	claims, _ := tok.Claims.(jwt.MapClaims)
	if scope, _ := claims["scope"].(string); !strings.Contains(scope, "https://www.googleapis.com/auth/firebase.messaging") {
		f.t.Errorf("fake fcm: assertion scope %q", scope)
		http.Error(w, `{"error":"invalid_scope"}`, http.StatusBadRequest)
		return
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	access := "ya29." + hex.EncodeToString(b)
	f.mu.Lock()
	f.tokens[access] = true
	f.tokenGrants++
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, access)
}

func (f *FCM) send(w http.ResponseWriter, r *http.Request) {
	defer f.enter()()
	bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	ok := f.tokens[bearer]
	f.mu.Unlock()
	if !ok {
		f.t.Errorf("fake fcm: send without a valid access token")
		http.Error(w, `{"error":{"code":401,"status":"UNAUTHENTICATED"}}`, http.StatusUnauthorized)
		return
	}
	if p := r.PathValue("project"); p != f.Project {
		f.t.Errorf("fake fcm: project %q", p)
		http.Error(w, `{"error":{"code":403,"status":"PERMISSION_DENIED"}}`, http.StatusForbidden)
		return
	}
	var body struct {
		Message struct {
			Token   string            `json:"token"`
			Data    map[string]string `json:"data"`
			Android map[string]any    `json:"android"`
		} `json:"message"`
	}
	b, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err := json.Unmarshal(b, &body); err != nil || body.Message.Token == "" {
		f.t.Errorf("fake fcm: bad message %s", b)
		http.Error(w, `{"error":{"code":400,"status":"INVALID_ARGUMENT"}}`, http.StatusBadRequest)
		return
	}
	reply := f.next(body.Message.Token)
	if reply.Status == 0 {
		f.mu.Lock()
		f.received = append(f.received, FCMMessage{Token: body.Message.Token, Data: body.Message.Data, Android: body.Message.Android})
		f.mu.Unlock()
		if reply.Delay > 0 {
			f.write(w, Reply{Delay: reply.Delay}, http.StatusOK)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"name":"projects/%s/messages/1"}`, f.Project)
		return
	}
	f.write(w, reply, http.StatusOK)
}
