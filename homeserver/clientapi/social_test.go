package clientapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

func TestDirectoryRelationsTagsReports(t *testing.T) {
	s := shardtest.New(t)
	a := s.CreateTenant(t, "social")
	other := s.CreateTenant(t, "social_other")
	alice := a.Register(t, "alice")
	bob := a.Register(t, "bob")
	a.Register(t, "bobby") // shares no room with alice
	other.Register(t, "bob")

	room := url.PathEscape(alice.MustDo(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": []string{bob.UserID}})["room_id"].(string))
	bob.MustDo(t, "POST", "/_matrix/client/v3/join/"+room, map[string]any{})

	// The directory finds users sharing a room, never other tenants' users or strangers.
	res := alice.MustDo(t, "POST", "/_matrix/client/v3/user_directory/search", map[string]any{"search_term": "bob"})
	results, _ := res["results"].([]any)
	if len(results) != 1 || results[0].(map[string]any)["user_id"] != bob.UserID {
		t.Fatalf("directory search = %v", res)
	}

	// A thread and an annotation, read back through relations and threads.
	root := alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/r", map[string]any{"msgtype": "m.text", "body": "root"})["event_id"].(string)
	bob.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/t1", map[string]any{"msgtype": "m.text", "body": "reply",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	bob.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.reaction/re1", map[string]any{
		"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "+1"}})
	rel := alice.MustDo(t, "GET", "/_matrix/client/v1/rooms/"+room+"/relations/"+url.PathEscape(root), nil)
	if chunk, _ := rel["chunk"].([]any); len(chunk) != 2 {
		t.Fatalf("relations = %v", rel)
	}
	rel = alice.MustDo(t, "GET", "/_matrix/client/v1/rooms/"+room+"/relations/"+url.PathEscape(root)+"/m.thread", nil)
	if chunk, _ := rel["chunk"].([]any); len(chunk) != 1 {
		t.Fatalf("thread relations = %v", rel)
	}
	th := alice.MustDo(t, "GET", "/_matrix/client/v1/rooms/"+room+"/threads", nil)
	if chunk, _ := th["chunk"].([]any); len(chunk) != 1 || chunk[0].(map[string]any)["event_id"] != root {
		t.Fatalf("threads = %v", th)
	}

	// Tags.
	alice.MustDo(t, "PUT", "/_matrix/client/v3/user/"+url.PathEscape(alice.UserID)+"/rooms/"+room+"/tags/m.favourite", map[string]any{"order": 0.5})
	tags := alice.MustDo(t, "GET", "/_matrix/client/v3/user/"+url.PathEscape(alice.UserID)+"/rooms/"+room+"/tags", nil)
	if _, ok := tags["tags"].(map[string]any)["m.favourite"]; !ok {
		t.Fatalf("tags = %v", tags)
	}
	alice.MustDo(t, "DELETE", "/_matrix/client/v3/user/"+url.PathEscape(alice.UserID)+"/rooms/"+room+"/tags/m.favourite", nil)
	tags = alice.MustDo(t, "GET", "/_matrix/client/v3/user/"+url.PathEscape(alice.UserID)+"/rooms/"+room+"/tags", nil)
	if len(tags["tags"].(map[string]any)) != 0 {
		t.Fatalf("tag not deleted: %v", tags)
	}
	if st, _ := bob.Do(t, "GET", "/_matrix/client/v3/user/"+url.PathEscape(alice.UserID)+"/rooms/"+room+"/tags", nil); st != http.StatusForbidden {
		t.Fatalf("bob read alice's tags: %d", st)
	}

	// Reports.
	bob.MustDo(t, "POST", "/_matrix/client/v3/rooms/"+room+"/report/"+url.PathEscape(root), map[string]any{"reason": "spam", "score": -100})
	if st, body := bob.Do(t, "POST", "/_matrix/client/v3/rooms/"+room+"/report/$nope", map[string]any{"reason": "x"}); st != http.StatusNotFound {
		t.Fatalf("report of unknown event: %d %v", st, body)
	}
	if st, _ := bob.Do(t, "POST", "/_matrix/client/v3/rooms/"+room+"/report/"+url.PathEscape(root), map[string]any{"score": 5}); st != http.StatusBadRequest {
		t.Fatalf("bad score accepted: %d", st)
	}
}
