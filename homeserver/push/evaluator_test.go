package push_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atoll-matrix/atoll/homeserver/push"
	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/atolltest/pgtest"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

func TestProcess(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t)
	schema := "t_" + pgtest.Name(t)
	pgtest.DropSchemaOnCleanup(t, pool, schema)
	if _, err := storage.Migrate(ctx, pool, schema); err != nil {
		t.Fatal(err)
	}
	store := storage.New(pool, schema)
	_, key, _ := ed25519.GenerateKey(nil)
	host := &rooms.Host{TenantID: "t1", ServerName: "example.org", KeyID: "ed25519:1", Key: key, Store: store}

	var woken int
	ev := push.NewEvaluator(slog.New(slog.DiscardHandler), func(s *storage.Store) {
		if s == store {
			woken++
		}
	})
	logs := &errorLog{}
	queue := push.NewQueue(slog.New(logs), ev)
	engine := rooms.New(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), func(p rooms.Persisted) {
		queue.Enqueue(store, host.ServerName, p)
	})

	const alice, bob, dave = "@alice:example.org", "@bob:example.org", "@dave:example.org"
	roomID, err := engine.CreateRoom(ctx, host, rooms.CreateOptions{Creator: alice, Version: "10", Preset: rooms.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	send := func(sender, typ string, stateKey *string, content string) string {
		t.Helper()
		id, err := engine.Send(ctx, host, rooms.Request{RoomID: roomID, Sender: sender, Type: typ, StateKey: stateKey, Content: json.RawMessage(content)})
		if err != nil {
			t.Fatalf("send %s: %v", typ, err)
		}
		return id
	}
	sk := func(s string) *string { return &s }
	send(bob, spec.MRoomMember, sk(bob), `{"membership":"join","displayname":"Bobby Tables"}`)

	hello := send(alice, "m.room.message", nil, `{"msgtype":"m.text","body":"hello"}`)
	bobAtRoom := send(bob, "m.room.message", nil, `{"msgtype":"m.text","body":"@room hi"}`)
	aliceAtRoom := send(alice, "m.room.message", nil, `{"msgtype":"m.text","body":"@room listen"}`)
	byName := send(alice, "m.room.message", nil, `{"msgtype":"m.text","body":"thanks bobby tables!"}`)
	edit := send(alice, "m.room.message", nil, `{"msgtype":"m.text","body":"* x","m.relates_to":{"rel_type":"m.replace","event_id":"`+hello+`"}}`)
	inThread := send(alice, "m.room.message", nil, `{"msgtype":"m.text","body":"in thread","m.relates_to":{"rel_type":"m.thread","event_id":"`+hello+`"}}`)
	invite := send(alice, spec.MRoomMember, sk(dave), `{"membership":"invite"}`)
	const carol = "@carol:example.org"
	send(carol, spec.MRoomMember, sk(carol), `{"membership":"join"}`)
	err = store.Tx(ctx, func(q pgdb.DBTX) error {
		_, err := storage.PutAccountData(ctx, q, carol, "", "m.ignored_user_list", json.RawMessage(`{"ignored_users":{"@bob:example.org":{}}}`))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	fromBob := send(bob, "m.room.message", nil, `{"msgtype":"m.text","body":"hey all"}`)
	queue.Stop() // drains what was enqueued
	if n := logs.count(); n > 0 {
		t.Fatalf("%d evaluation errors logged", n)
	}

	type row struct {
		notify, highlight bool
		thread            string
	}
	got := map[[2]string]row{}
	err = store.Tx(ctx, func(q pgdb.DBTX) error {
		rows, err := q.Query(ctx, `SELECT user_id, event_id, notify, highlight, thread_id FROM event_push_actions`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u, e string
			var r row
			if err := rows.Scan(&u, &e, &r.notify, &r.highlight, &r.thread); err != nil {
				return err
			}
			got[[2]string{u, e}] = r
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		user  string
		event string
		want  *row
	}{
		{"message in a two-member room", bob, hello, &row{true, false, "main"}},
		{"sender gets nothing", alice, hello, nil},
		{"@room without power", alice, bobAtRoom, &row{true, false, "main"}},
		{"@room from the creator", bob, aliceAtRoom, &row{true, true, "main"}},
		{"room display name", bob, byName, &row{true, true, "main"}},
		{"edits are suppressed", bob, edit, nil},
		{"thread reply carries its root", bob, inThread, &row{true, false, hello}},
		{"local invitee", dave, invite, &row{true, false, "main"}},
		{"group message", alice, fromBob, &row{true, false, "main"}},
		{"ignored sender", carol, fromBob, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := got[[2]string{tt.user, tt.event}]
			switch {
			case tt.want == nil && ok:
				t.Errorf("unexpected row %+v", r)
			case tt.want != nil && !ok:
				t.Errorf("no row")
			case tt.want != nil && r != *tt.want:
				t.Errorf("row %+v, want %+v", r, *tt.want)
			}
		})
	}
	if woken == 0 {
		t.Error("pusher worker never woken")
	}
}

// errorLog counts records at error level.
type errorLog struct {
	mu sync.Mutex
	n  int
}

func (h *errorLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *errorLog) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.mu.Lock()
		h.n++
		h.mu.Unlock()
	}
	return nil
}
func (h *errorLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *errorLog) WithGroup(string) slog.Handler      { return h }
func (h *errorLog) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}
