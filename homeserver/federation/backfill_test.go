package federation_test

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"testing"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// paginateBack follows /messages backwards from the newest event until the end token is
// gone and returns every event, newest first.
func paginateBack(t *testing.T, c *shardtest.Client, roomID string, limit int) []map[string]any {
	t.Helper()
	var all []map[string]any
	from := ""
	for page := 0; ; page++ {
		if page > 50 {
			t.Fatalf("no end of history after 50 pages")
		}
		path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/messages?dir=b&limit=%d", url.PathEscape(roomID), limit)
		if from != "" {
			path += "&from=" + url.QueryEscape(from)
		}
		body := c.MustDo(t, "GET", path, nil)
		chunk, _ := body["chunk"].([]any)
		for _, e := range chunk {
			all = append(all, e.(map[string]any))
		}
		end, _ := body["end"].(string)
		if end == "" {
			return all
		}
		if len(chunk) == 0 {
			t.Fatalf("empty page with end token %q", end)
		}
		from = end
	}
}

func bodiesOf(evs []map[string]any) []string {
	var out []string
	for _, ev := range evs {
		if ev["type"] == "m.room.message" {
			out = append(out, fmt.Sprint(ev["content"].(map[string]any)["body"]))
		}
	}
	return out
}

// TestBackfill: bob joins over federation a room with 30 messages of shared history; paging
// /messages back past his join backfills them from alice's server, in order, down to the
// room's creation. The resident side answers /backfill only to servers that were in the room,
// and a room whose history is for joined members shows nothing from before the join.
func TestBackfill(t *testing.T) {
	s1 := shardtest.New(t)
	s2 := shardtest.New(t)
	a := s1.CreateTenant(t, "bf_a")
	b := s2.CreateTenant(t, "bf_b")
	c := s2.CreateTenant(t, "bf_c")
	alice := a.Register(t, "alice")
	bob := b.Register(t, "bob")
	t.Cleanup(func() {
		if t.Failed() {
			dumpFederation(t, s1, a)
			dumpFederation(t, s2, b)
		}
	})

	room := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})
	roomID := room["room_id"].(string)
	r := url.PathEscape(roomID)
	var want []string
	var firstID string
	for i := range 30 {
		body := fmt.Sprintf("before %02d", i)
		sent := alice.MustDo(t, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/b%d", r, i), map[string]any{"msgtype": "m.text", "body": body})
		if i == 0 {
			firstID = sent["event_id"].(string)
		}
		want = append([]string{body}, want...)
	}
	bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+r+"?server_name="+url.QueryEscape(a.ServerName), map[string]any{})
	alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/send/m.room.message/after", map[string]any{"msgtype": "m.text", "body": "after join"})
	waitFor(t, bob, "alice's message after the join", timelineHas(roomID, "m.room.message", "body", "after join"))

	t.Run("joining side pages into backfilled history", func(t *testing.T) {
		stored := func() int {
			return scalar[int](t, s2, b, `SELECT count(*) FROM $schema.events WHERE room_id = $1 AND type = 'm.room.message' AND outlier`, roomID)
		}
		if n := stored(); n != 0 {
			t.Fatalf("%d pre-join messages stored before any backfill", n)
		}
		evs := paginateBack(t, bob, roomID, 7)
		if n := stored(); n != 30 {
			t.Fatalf("%d pre-join messages stored after backfill, want 30", n)
		}
		t.Logf("%d events in bob's history after backfill", len(evs))
		if got := bodiesOf(evs); !reflect.DeepEqual(got, append([]string{"after join"}, want...)) {
			t.Fatalf("bob's history = %q", got)
		}
		if last := evs[len(evs)-1]; last["type"] != "m.room.create" {
			t.Fatalf("history ends with %v, want the room's creation", last["type"])
		}
		seen := map[string]bool{}
		for _, ev := range evs {
			id := ev["event_id"].(string)
			if seen[id] {
				t.Fatalf("event %s shown twice", id)
			}
			seen[id] = true
		}
		// A second walk reads what is stored, without gaps, the same.
		if again := paginateBack(t, bob, roomID, 50); !reflect.DeepEqual(bodiesOf(again), bodiesOf(evs)) || len(again) != len(evs) {
			t.Fatalf("second walk differs: %d events %q", len(again), bodiesOf(again))
		}
	})

	t.Run("resident side", func(t *testing.T) {
		path := "/_matrix/federation/v1/backfill/" + r + "?limit=5&v=" + url.QueryEscape(firstID)
		st, resp := federationDo(t, identityOf(t, s2, b), s1, a, "GET", path, nil)
		if st != http.StatusOK {
			t.Fatalf("backfill: %d %v", st, resp)
		}
		pdus, _ := resp["pdus"].([]any)
		if len(pdus) != 5 || resp["origin"] != a.ServerName {
			t.Fatalf("backfill returned %d PDUs from %v, want 5 from %s", len(pdus), resp["origin"], a.ServerName)
		}
		if c := pdus[0].(map[string]any)["content"].(map[string]any); c["body"] != "before 00" {
			t.Fatalf("first PDU is not the given event: %v", c)
		}
		st, resp = federationDo(t, identityOf(t, s2, c), s1, a, "GET", path, nil)
		if st != http.StatusForbidden || resp["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("backfill for a server never in the room: %d %v", st, resp)
		}
	})

	t.Run("history for joined members only", func(t *testing.T) {
		room := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat",
			"initial_state": []any{map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}})
		roomID := room["room_id"].(string)
		alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/secret", map[string]any{"msgtype": "m.text", "body": "secret"})
		bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.ServerName), map[string]any{})
		evs := paginateBack(t, bob, roomID, 10)
		if got := bodiesOf(evs); len(got) != 0 {
			t.Fatalf("bob sees %q from before his join", got)
		}
		if len(evs) == 0 || evs[len(evs)-1]["type"] != "m.room.member" {
			t.Fatalf("bob's history should start at his join: %v", evs)
		}
	})
}
