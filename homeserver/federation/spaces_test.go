package federation_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// inSection reports a sync that lists roomID under rooms.<section>.
func inSection(section, roomID string) func(map[string]any) bool {
	return func(sync map[string]any) bool {
		rooms, _ := sync["rooms"].(map[string]any)
		sec, _ := rooms[section].(map[string]any)
		_, ok := sec[roomID]
		return ok
	}
}

// waitMembership polls c's view of user's membership in roomID until it is want.
func waitMembership(t *testing.T, c *shardtest.Client, roomID, user, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last map[string]any
	for time.Now().Before(deadline) {
		st, body := c.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.member/"+url.PathEscape(user), nil)
		if st == http.StatusOK && body["membership"] == want {
			return
		}
		last = body
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s's membership of %s as %s sees it: want %s, last %v", user, roomID, c.UserID, want, last)
}

func knockRoom(t *testing.T, c *shardtest.Client, name string) string {
	t.Helper()
	room := c.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"name": name, "preset": "private_chat",
		"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}})
	return room["room_id"].(string)
}

// TestLocalKnock: a user knocks on a knock room of their own server, sees it in /sync's
// rooms.knock, is invited by the room's admin and joins; another knock is withdrawn with
// leave.
func TestLocalKnock(t *testing.T) {
	s := shardtest.New(t)
	a := s.CreateTenant(t, "lk_a")
	alice, bob, dan := a.Register(t, "alice"), a.Register(t, "bob"), a.Register(t, "dan")
	roomID := knockRoom(t, alice, "Knockers")
	r := url.PathEscape(roomID)

	got := bob.MustDo(t, "POST", "/_matrix/client/v3/knock/"+r, map[string]any{"reason": "let me in"})
	if got["room_id"] != roomID {
		t.Fatalf("knock = %v", got)
	}
	waitFor(t, bob, "the knock in bob's sync", func(sync map[string]any) bool {
		rooms, _ := sync["rooms"].(map[string]any)
		k, _ := rooms["knock"].(map[string]any)
		room, _ := k[roomID].(map[string]any)
		ks, _ := room["knock_state"].(map[string]any)
		evs, _ := ks["events"].([]any)
		return len(evs) > 0
	})
	waitMembership(t, alice, roomID, bob.UserID, "knock")
	// Joining directly is still refused: knocking asks, an invite answers.
	if st, _ := bob.Do(t, "POST", "/_matrix/client/v3/join/"+r, map[string]any{}); st != http.StatusForbidden {
		t.Fatalf("join without invite = %d, want 403", st)
	}
	alice.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+r+"/invite", map[string]any{"user_id": bob.UserID})
	waitFor(t, bob, "the invite after the knock", inSection("invite", roomID))
	bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+r, map[string]any{})
	waitMembership(t, alice, roomID, bob.UserID, "join")

	dan.MustDo(t, "POST", "/_matrix/client/v3/knock/"+r, map[string]any{})
	waitMembership(t, alice, roomID, dan.UserID, "knock")
	dan.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+r+"/leave", map[string]any{})
	waitMembership(t, alice, roomID, dan.UserID, "leave")

	// A room whose join rule is not knock refuses knocks.
	plain := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"})["room_id"].(string)
	if st, body := dan.Do(t, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(plain), map[string]any{}); st != http.StatusForbidden {
		t.Fatalf("knock on an invite-only room = %d %v, want 403", st, body)
	}
}

// TestRemoteKnock: users of another tenant knock through make_knock/send_knock; the knock is
// in the knocker's /sync and in the room, the room's admin invites and the knocker joins; a
// second knock is withdrawn with leave (make_leave/send_leave).
func TestRemoteKnock(t *testing.T) {
	s := shardtest.New(t)
	a := s.CreateTenant(t, "rk_a")
	b := s.CreateTenant(t, "rk_b")
	alice := a.Register(t, "alice")
	bob, carol := b.Register(t, "bob"), b.Register(t, "carol")
	roomID := knockRoom(t, alice, "Remote knockers")
	r := url.PathEscape(roomID)
	via := "?server_name=" + url.QueryEscape(a.ServerName)

	got := bob.MustDo(t, "POST", "/_matrix/client/v3/knock/"+r+via, map[string]any{"reason": "hello"})
	if got["room_id"] != roomID {
		t.Fatalf("knock = %v", got)
	}
	waitFor(t, bob, "the remote knock in bob's sync", func(sync map[string]any) bool {
		rooms, _ := sync["rooms"].(map[string]any)
		k, _ := rooms["knock"].(map[string]any)
		room, _ := k[roomID].(map[string]any)
		ks, _ := room["knock_state"].(map[string]any)
		evs, _ := ks["events"].([]any)
		for _, e := range evs {
			if ev, _ := e.(map[string]any); ev["type"] == "m.room.name" {
				return true
			}
		}
		return false
	})
	waitMembership(t, alice, roomID, bob.UserID, "knock")

	alice.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+r+"/invite", map[string]any{"user_id": bob.UserID})
	waitFor(t, bob, "the invite after the remote knock", inSection("invite", roomID))
	bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+r, map[string]any{})
	waitMembership(t, alice, roomID, bob.UserID, "join")
	waitFor(t, bob, "the joined room at bob", inSection("join", roomID))

	carol.MustDo(t, "POST", "/_matrix/client/v3/knock/"+r+via, map[string]any{})
	waitMembership(t, alice, roomID, carol.UserID, "knock")
	carol.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+r+"/leave", map[string]any{})
	waitMembership(t, alice, roomID, carol.UserID, "leave")
	_, sync := carol.Do(t, "GET", "/_matrix/client/v3/sync", nil)
	if inSection("knock", roomID)(sync) {
		t.Fatalf("withdrawn knock still in carol's sync: %v", sync["rooms"])
	}
}

// TestSpaceHierarchy: a space with a child room on its own server and one on another
// tenant; the hierarchy lists all three, the remote one described by its server, and
// max_depth, limit with next_batch and suggested_only shape the answer.
func TestSpaceHierarchy(t *testing.T) {
	s := shardtest.New(t)
	a := s.CreateTenant(t, "sh_a")
	b := s.CreateTenant(t, "sh_b")
	alice, bob := a.Register(t, "alice"), b.Register(t, "bob")
	space := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"name": "Space", "preset": "public_chat",
		"creation_content": map[string]any{"type": "m.space"}})["room_id"].(string)
	local := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"name": "Local child", "preset": "public_chat"})["room_id"].(string)
	remote := bob.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"name": "Remote child", "topic": "far away", "preset": "public_chat"})["room_id"].(string)
	sp := url.PathEscape(space)
	alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+sp+"/state/m.space.child/"+url.PathEscape(local),
		map[string]any{"via": []string{a.ServerName}, "order": "a", "suggested": true})
	alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+sp+"/state/m.space.child/"+url.PathEscape(remote),
		map[string]any{"via": []string{b.ServerName}, "order": "b"})

	list := func(query string) ([]map[string]any, map[string]any) {
		t.Helper()
		body := alice.MustDo(t, "GET", "/_matrix/client/v1/rooms/"+sp+"/hierarchy"+query, nil)
		raw, _ := body["rooms"].([]any)
		out := make([]map[string]any, 0, len(raw))
		for _, r := range raw {
			out = append(out, r.(map[string]any))
		}
		return out, body
	}
	all, _ := list("")
	if len(all) != 3 || all[0]["room_id"] != space || all[1]["room_id"] != local || all[2]["room_id"] != remote {
		t.Fatalf("hierarchy = %v", all)
	}
	if all[0]["room_type"] != "m.space" || len(all[0]["children_state"].([]any)) != 2 {
		t.Fatalf("space entry = %v", all[0])
	}
	if all[2]["name"] != "Remote child" || all[2]["topic"] != "far away" || fmt.Sprint(all[2]["num_joined_members"]) != "1" {
		t.Fatalf("remote child entry = %v", all[2])
	}

	if top, _ := list("?max_depth=0"); len(top) != 1 {
		t.Fatalf("max_depth=0 = %v", top)
	}
	if sugg, _ := list("?suggested_only=true"); len(sugg) != 2 || sugg[1]["room_id"] != local {
		t.Fatalf("suggested_only = %v", sugg)
	}
	first, body := list("?limit=2")
	next, _ := body["next_batch"].(string)
	if len(first) != 2 || next == "" {
		t.Fatalf("limit=2 = %v", body)
	}
	rest, body := list("?limit=2&from=" + url.QueryEscape(next))
	if len(rest) != 1 || rest[0]["room_id"] != remote || body["next_batch"] != nil {
		t.Fatalf("second page = %v", body)
	}
	if st, _ := alice.Do(t, "GET", "/_matrix/client/v1/rooms/"+sp+"/hierarchy?from="+url.QueryEscape(next)+"&max_depth=1", nil); st != http.StatusBadRequest {
		t.Fatalf("token with other parameters = %d, want 400", st)
	}

	// A private room is not shown to a user outside it.
	private := bob.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"})["room_id"].(string)
	if st, _ := alice.Do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(private)+"/hierarchy?via="+b.ServerName, nil); st != http.StatusForbidden {
		t.Fatalf("hierarchy of a private remote room = %d, want 403", st)
	}
}

// TestTimestampToEvent: the event nearest a time in both directions, locally, and through
// another server for history the asking tenant does not hold.
func TestTimestampToEvent(t *testing.T) {
	s := shardtest.New(t)
	a := s.CreateTenant(t, "te_a")
	b := s.CreateTenant(t, "te_b")
	alice, bob := a.Register(t, "alice"), b.Register(t, "bob")
	roomID := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})["room_id"].(string)
	r := url.PathEscape(roomID)
	first := alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/send/m.room.message/1", map[string]any{"msgtype": "m.text", "body": "one"})["event_id"].(string)
	time.Sleep(20 * time.Millisecond)
	mid := time.Now().UnixMilli()
	time.Sleep(20 * time.Millisecond)
	second := alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+r+"/send/m.room.message/2", map[string]any{"msgtype": "m.text", "body": "two"})["event_id"].(string)

	ask := func(c *shardtest.Client, ts int64, dir string) (int, map[string]any) {
		return c.Do(t, "GET", "/_matrix/client/v1/rooms/"+r+"/timestamp_to_event?ts="+strconv.FormatInt(ts, 10)+"&dir="+dir, nil)
	}
	tests := []struct {
		name string
		ts   int64
		dir  string
		want string
	}{
		{"forward from the middle", mid, "f", second},
		{"backward from the middle", mid, "b", first},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, body := ask(alice, tc.ts, tc.dir)
			if st != http.StatusOK || body["event_id"] != tc.want {
				t.Fatalf("= %d %v, want %s", st, body, tc.want)
			}
		})
	}
	if st, _ := ask(alice, time.Now().Add(time.Hour).UnixMilli(), "f"); st != http.StatusNotFound {
		t.Fatalf("forward from the future = %d, want 404", st)
	}
	if st, _ := ask(alice, mid, "x"); st != http.StatusBadRequest {
		t.Fatalf("bad dir = %d, want 400", st)
	}

	// Bob's server holds the room only from his join: earlier history is asked of alice's.
	bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+r+"?server_name="+url.QueryEscape(a.ServerName), map[string]any{})
	st, body := ask(bob, mid, "b")
	if st != http.StatusOK || body["event_id"] != first {
		t.Fatalf("bob backward from the middle = %d %v, want %s", st, body, first)
	}
	if st, _ := ask(bob, time.Now().Add(-time.Hour).UnixMilli(), "b"); st != http.StatusNotFound {
		t.Fatalf("bob backward from before the room = %d, want 404", st)
	}
}

// TestFederatedPublicRooms: a user of one tenant reads another tenant's public room
// directory over federation, filtered and paginated.
func TestFederatedPublicRooms(t *testing.T) {
	s := shardtest.New(t)
	a := s.CreateTenant(t, "pr_a")
	b := s.CreateTenant(t, "pr_b")
	alice, bob := a.Register(t, "alice"), b.Register(t, "bob")
	for _, name := range []string{"Harbour", "Lighthouse"} {
		alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"name": name, "preset": "public_chat", "visibility": "public"})
	}
	alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"name": "Unlisted", "preset": "public_chat"})
	server := url.QueryEscape(a.ServerName)

	body := bob.MustDo(t, "GET", "/_matrix/client/v3/publicRooms?server="+server, nil)
	chunk, _ := body["chunk"].([]any)
	if len(chunk) != 2 || fmt.Sprint(body["total_room_count_estimate"]) != "2" {
		t.Fatalf("remote directory = %v", body)
	}
	body = bob.MustDo(t, "POST", "/_matrix/client/v3/publicRooms?server="+server, map[string]any{"filter": map[string]any{"generic_search_term": "light"}})
	chunk, _ = body["chunk"].([]any)
	if len(chunk) != 1 || chunk[0].(map[string]any)["name"] != "Lighthouse" {
		t.Fatalf("filtered remote directory = %v", body)
	}
	body = bob.MustDo(t, "POST", "/_matrix/client/v3/publicRooms?server="+server, map[string]any{"limit": 1})
	next, _ := body["next_batch"].(string)
	if chunk, _ = body["chunk"].([]any); len(chunk) != 1 || next == "" {
		t.Fatalf("first remote page = %v", body)
	}
	body = bob.MustDo(t, "POST", "/_matrix/client/v3/publicRooms?server="+server, map[string]any{"limit": 1, "since": next})
	if chunk, _ = body["chunk"].([]any); len(chunk) != 1 || body["next_batch"] != nil {
		t.Fatalf("second remote page = %v", body)
	}
	// The local directory is unchanged by the refactor.
	local := alice.MustDo(t, "GET", "/_matrix/client/v3/publicRooms", nil)
	if chunk, _ = local["chunk"].([]any); len(chunk) != 2 {
		t.Fatalf("local directory = %v", local)
	}
	if st, _ := bob.Do(t, "GET", "/_matrix/client/v3/publicRooms?server=nowhere.invalid", nil); st == http.StatusOK {
		t.Fatalf("directory of an unreachable server answered 200")
	}
}

// TestRemoteKnockRefused: a knock on another tenant's invite-only room is the resident's
// 403 for the client, and nothing is kept for the knocker's /sync.
func TestRemoteKnockRefused(t *testing.T) {
	s := shardtest.New(t)
	a := s.CreateTenant(t, "rkr_a")
	b := s.CreateTenant(t, "rkr_b")
	alice, bob := a.Register(t, "alice"), b.Register(t, "bob")
	roomID := alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat"})["room_id"].(string)
	st, body := bob.Do(t, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(a.ServerName), map[string]any{})
	if st != http.StatusForbidden || body["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("knock on an invite-only room = %d %v, want 403 M_FORBIDDEN", st, body)
	}
	if _, sync := bob.Do(t, "GET", "/_matrix/client/v3/sync", nil); inSection("knock", roomID)(sync) {
		t.Fatalf("refused knock in bob's sync: %v", sync["rooms"])
	}
}
