package pusher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atoll-matrix/atoll/homeserver/pusher"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/atolltest/pgtest"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// gateway is a fake push gateway recording what it is sent.
type gateway struct {
	mu       sync.Mutex
	got      []map[string]any // notification objects, in arrival order
	failures map[string]int   // pushkey -> 503s still to return
	reject   map[string]bool
	srv      *httptest.Server
}

func newGateway(t testing.TB) *gateway {
	t.Helper()
	g := &gateway{failures: map[string]int{}, reject: map[string]bool{}}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != pusher.NotifyPath {
			http.Error(w, "wrong endpoint", http.StatusNotFound)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var req struct {
			Notification map[string]any `json:"notification"`
		}
		if err := json.Unmarshal(b, &req); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		key := req.Notification["devices"].([]any)[0].(map[string]any)["pushkey"].(string)
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.failures[key] > 0 {
			g.failures[key]--
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		g.got = append(g.got, req.Notification)
		rejected := []string{}
		if g.reject[key] {
			rejected = append(rejected, key)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"rejected": rejected})
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gateway) url() string { return g.srv.URL + pusher.NotifyPath }

// sent returns how often each (pushkey, event) pair arrived.
func (g *gateway) sent() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]int{}
	for _, n := range g.got {
		key := n["devices"].([]any)[0].(map[string]any)["pushkey"].(string)
		out[key+" "+n["event_id"].(string)]++
	}
	return out
}

func (g *gateway) notifications(pushkey string) []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []map[string]any
	for _, n := range g.got {
		if n["devices"].([]any)[0].(map[string]any)["pushkey"] == pushkey {
			out = append(out, n)
		}
	}
	return out
}

func newStore(t *testing.T) *storage.Store {
	t.Helper()
	pool := pgtest.Pool(t)
	schema := "t_" + pgtest.Name(t)
	pgtest.DropSchemaOnCleanup(t, pool, schema)
	if _, err := storage.Migrate(context.Background(), pool, schema); err != nil {
		t.Fatal(err)
	}
	return storage.New(pool, schema)
}

func newWorker(t *testing.T) *pusher.Worker {
	t.Helper()
	w := pusher.New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), pusher.Config{
		AllowedHosts: []string{"127.0.0.1"}, AllowHTTP: true, AllowPrivate: true,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Timeout: 5 * time.Second,
	})
	w.Start(context.Background())
	t.Cleanup(w.Stop)
	return w
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const room = "!room:example.org"

// notify stores an event from bob and a notifying verdict for user.
func notify(t *testing.T, store *storage.Store, user, body string) string {
	t.Helper()
	ctx := context.Background()
	var id string
	err := store.Tx(ctx, func(q pgdb.DBTX) error {
		pos, err := storage.NextStreamPos(ctx, q)
		if err != nil {
			return err
		}
		id = fmt.Sprintf("$ev%d", pos)
		js, _ := json.Marshal(map[string]any{"type": "m.room.message", "sender": "@bob:example.org", "room_id": room,
			"event_id": id, "content": map[string]any{"msgtype": "m.text", "body": body}})
		if err := storage.InsertEvent(ctx, q, storage.EventRow{StreamPos: pos, EventID: id, RoomID: room, Type: "m.room.message",
			Sender: "@bob:example.org", OriginServerTS: time.Now().UnixMilli(), Depth: pos, JSON: js}); err != nil {
			return err
		}
		return storage.InsertPushActions(ctx, q, []storage.PushAction{{UserID: user, RoomID: room, EventID: id, StreamPos: pos,
			Notify: true, Actions: json.RawMessage(`["notify",{"set_tweak":"sound","value":"default"}]`)}})
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func addPusher(t *testing.T, store *storage.Store, user, pushkey string, data map[string]any) {
	t.Helper()
	ctx := context.Background()
	b, _ := json.Marshal(data)
	err := store.Tx(ctx, func(q pgdb.DBTX) error {
		return storage.UpsertPusher(ctx, q, storage.Pusher{UserID: user, AppID: "org.example.app", Pushkey: pushkey, Kind: "http",
			AppDisplayName: "App", DeviceDisplayName: "Phone", Lang: "en", Data: b, CreatedTS: time.Now().UnixMilli()})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func pushers(t *testing.T, store *storage.Store) map[string]storage.Pusher {
	t.Helper()
	ctx := context.Background()
	out := map[string]storage.Pusher{}
	err := store.Tx(ctx, func(q pgdb.DBTX) error {
		ps, err := storage.PushersOfKind(ctx, q, "http")
		for _, p := range ps {
			out[p.Pushkey] = p
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDelivery(t *testing.T) {
	store := newStore(t)
	gw := newGateway(t)
	const alice, carol = "@alice:example.org", "@carol:example.org"
	addPusher(t, store, alice, "alice-full", map[string]any{"url": gw.url(), "extra": "kept"})
	addPusher(t, store, alice, "alice-idonly", map[string]any{"url": gw.url(), "format": "event_id_only"})
	addPusher(t, store, carol, "carol-gone", map[string]any{"url": gw.url()})
	gw.mu.Lock()
	gw.failures["alice-full"] = 2 // transient failures first: retried with backoff
	gw.reject["carol-gone"] = true
	gw.mu.Unlock()

	e1 := notify(t, store, alice, "one")
	e2 := notify(t, store, alice, "two")
	notify(t, store, carol, "for carol")

	w := newWorker(t)
	w.Wake(store)
	waitFor(t, "alice's notifications", func() bool {
		s := gw.sent()
		return s["alice-full "+e1] == 1 && s["alice-full "+e2] == 1 && s["alice-idonly "+e2] == 1
	})
	waitFor(t, "the rejected pusher to be removed", func() bool {
		_, ok := pushers(t, store)["carol-gone"]
		return !ok
	})

	full := gw.notifications("alice-full")[0]
	if full["type"] != "m.room.message" || full["sender"] != "@bob:example.org" || full["prio"] != "high" {
		t.Errorf("full notification: %v", full)
	}
	dev := full["devices"].([]any)[0].(map[string]any)
	if data := dev["data"].(map[string]any); data["url"] != nil || data["extra"] != "kept" {
		t.Errorf("device data must drop url and keep the rest: %v", data)
	}
	if dev["tweaks"].(map[string]any)["sound"] != "default" {
		t.Errorf("tweaks: %v", dev["tweaks"])
	}
	idOnly := gw.notifications("alice-idonly")[0]
	if idOnly["content"] != nil || idOnly["type"] != nil || idOnly["event_id"] != e1 {
		t.Errorf("event_id_only notification carries more than IDs: %v", idOnly)
	}
	if c := idOnly["counts"].(map[string]any)["unread"]; c != float64(2) {
		t.Errorf("unread count %v, want 2", c)
	}
	p := pushers(t, store)["alice-full"]
	if p.Failures != 0 || p.NextAttemptTS != 0 {
		t.Errorf("state after recovery: failures %d next %d", p.Failures, p.NextAttemptTS)
	}

	// A new worker on the same schema resumes after what was delivered.
	w.Stop()
	w2 := newWorker(t)
	e3 := notify(t, store, alice, "three")
	w2.Wake(store)
	waitFor(t, "the third notification", func() bool {
		s := gw.sent()
		return s["alice-full "+e3] == 1 && s["alice-idonly "+e3] == 1
	})
	time.Sleep(100 * time.Millisecond)
	for k, n := range gw.sent() {
		if n != 1 {
			t.Errorf("%s delivered %d times", k, n)
		}
	}
	if n := len(gw.notifications("carol-gone")); n != 1 {
		t.Errorf("removed pusher got %d notifications, want 1", n)
	}
}

func TestNewPusherSkipsOldNotifications(t *testing.T) {
	store := newStore(t)
	gw := newGateway(t)
	const alice = "@alice:example.org"
	notify(t, store, alice, "before the pusher")
	addPusher(t, store, alice, "k", map[string]any{"url": gw.url()})
	e := notify(t, store, alice, "after")
	w := newWorker(t)
	w.Wake(store)
	waitFor(t, "the new notification", func() bool { return gw.sent()["k "+e] == 1 })
	if n := len(gw.notifications("k")); n != 1 {
		t.Errorf("got %d notifications, want only the one after the pusher was added", n)
	}
}

func TestCheckURL(t *testing.T) {
	w := pusher.New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), pusher.Config{AllowedHosts: []string{"push.example.org", "*.gw.example"}})
	tests := []struct {
		url string
		ok  bool
	}{
		{"https://push.example.org/_matrix/push/v1/notify", true},
		{"https://a.gw.example/_matrix/push/v1/notify", true},
		{"http://push.example.org/_matrix/push/v1/notify", false},
		{"https://evil.example/_matrix/push/v1/notify", false},
		{"https://push.example.org/other", false},
		{"https://user:pw@push.example.org/_matrix/push/v1/notify", false},
		{"https://push.example.org/_matrix/push/v1/notify?x=1", false},
		{"not a url", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			err := w.CheckURL(tt.url)
			if (err == nil) != tt.ok {
				t.Errorf("CheckURL = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, pusher.ErrNotAllowed) {
				t.Errorf("error %v is not ErrNotAllowed", err)
			}
		})
	}
}
