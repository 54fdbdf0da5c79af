package clientapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

// FuzzEvents sends arbitrary state and message events, and arbitrary sync and pagination
// parameters, through a real shard: every answer is 200 or a Matrix error below 500, and the
// room keeps working afterwards.
func FuzzEvents(f *testing.F) {
	s := shardtest.New(f)
	tn := s.CreateTenant(f, "fuzz")
	alice := tn.Register(f, "alice")
	bob := tn.Register(f, "bob")
	body := alice.MustDo(f, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})
	room := url.PathEscape(body["room_id"].(string))
	bob.MustDo(f, "POST", "/_matrix/client/v3/join/"+room, map[string]any{})

	seeds := []struct {
		typ, key, content, param string
	}{
		{"m.room.message", "", `{"msgtype":"m.text","body":"hi"}`, "s0_0"},
		{"m.room.member", "@bob:x", `{"membership":"join"}`, "p5"},
		{"m.room.power_levels", "", `{"users":{"@bob:x":100}}`, `{"room":{"timeline":{"limit":1}}}`},
		{"m.room.create", "", `{"room_version":"12"}`, "s-1"},
		{"m.room.join_rules", "", `{"join_rule":"knock"}`, "s99999999999999999999"},
		{"m.room.redaction", "", `{"redacts":"$x"}`, `{"room":{"state":{"lazy_load_members":true}}}`},
		{"m.room.name", "", `{"name":5}`, "sX"},
		{"x", "\x00", `{}`, "p"},
		{"m.room.history_visibility", "", `{"history_visibility":"world_readable"}`, ""},
	}
	for _, sd := range seeds {
		f.Add(sd.typ, sd.key, []byte(sd.content), sd.param, true)
		f.Add(sd.typ, sd.key, []byte(sd.content), sd.param, false)
	}
	txn := 0
	check := func(t *testing.T, what string, status int, raw []byte) {
		t.Helper()
		if status >= 500 {
			t.Fatalf("%s: status %d: %s", what, status, raw)
		}
		if status != http.StatusOK {
			var e struct {
				Errcode string `json:"errcode"`
			}
			if json.Unmarshal(raw, &e) != nil || e.Errcode == "" {
				t.Fatalf("%s: status %d without a Matrix error: %s", what, status, raw)
			}
		}
	}
	f.Fuzz(func(t *testing.T, typ, key string, content []byte, param string, state bool) {
		txn++
		var st int
		var raw []byte
		if state {
			st, raw = bob.DoRaw(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/"+url.PathEscape(typ)+"/"+url.PathEscape(key), content)
		} else {
			st, raw = bob.DoRaw(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/"+url.PathEscape(typ)+"/f"+itoa(txn), content)
		}
		check(t, "event", st, raw)
		st, raw = bob.DoRaw(t, "GET", "/_matrix/client/v3/sync?since="+url.QueryEscape(param)+"&filter="+url.QueryEscape(param), nil)
		check(t, "sync", st, raw)
		st, raw = bob.DoRaw(t, "GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&from="+url.QueryEscape(param), nil)
		check(t, "messages", st, raw)
		// The room still accepts a plain message from its creator.
		alice.MustDo(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/a"+itoa(txn), map[string]any{"msgtype": "m.text", "body": "still here"})
	})
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
