package clientapi_test

import (
	"net/http"
	"testing"

	"github.com/atoll-matrix/atoll/internal/atolltest/shardtest"
)

func ruleIDs(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, r := range list {
		out = append(out, r.(map[string]any)["rule_id"].(string))
	}
	return out
}

func dig(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func TestPushRulesCRUD(t *testing.T) {
	sh := shardtest.New(t)
	tn := sh.CreateTenant(t, "push")
	alice := tn.Register(t, "alice")
	const base = "/_matrix/client/v3/pushrules/global/"

	all := alice.MustDo(t, "GET", "/_matrix/client/v3/pushrules/", nil)
	over := ruleIDs(dig(all, "global", "override"))
	if len(over) == 0 || over[0] != ".m.rule.master" {
		t.Fatalf("override rules %v", over)
	}
	content := dig(all, "global", "content").([]any)
	if len(content) != 1 || content[0].(map[string]any)["pattern"] != "alice" {
		t.Errorf("content rules %v", content)
	}
	if u := ruleIDs(dig(all, "global", "underride")); len(u) != 5 || u[3] != ".m.rule.message" {
		t.Errorf("underride rules %v", u)
	}

	rule := map[string]any{"actions": []any{"notify"}, "conditions": []any{
		map[string]any{"kind": "event_match", "key": "content.body", "pattern": "deploy"}}}
	alice.MustDo(t, "PUT", base+"override/a", rule)
	alice.MustDo(t, "PUT", base+"override/b?before=a", rule)
	alice.MustDo(t, "PUT", base+"override/c?after=a", rule)
	alice.MustDo(t, "PUT", base+"override/d?after=b", rule)
	got := ruleIDs(alice.MustDo(t, "GET", "/_matrix/client/v3/pushrules/global/", nil)["override"])
	want := []string{".m.rule.master", "b", "d", "a", "c", ".m.rule.suppress_notices"}
	for i, id := range want {
		if i >= len(got) || got[i] != id {
			t.Fatalf("override order %v, want prefix %v", got, want)
		}
	}

	tests := []struct {
		name   string
		method string
		path   string
		body   any
		status int
		code   string
	}{
		{"place against a missing rule", "PUT", base + "override/e?before=nope", rule, http.StatusNotFound, "M_NOT_FOUND"},
		{"place against a default rule", "PUT", base + "override/e?after=.m.rule.master", rule, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"reserved rule ID", "PUT", base + "override/.m.rule.mine", rule, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"content rule without pattern", "PUT", base + "content/kw", map[string]any{"actions": []any{"notify"}}, http.StatusBadRequest, "M_MISSING_PARAM"},
		{"missing actions", "PUT", base + "underride/x", map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM"},
		{"unknown action", "PUT", base + "underride/x", map[string]any{"actions": []any{"explode"}}, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"unknown kind", "GET", base + "bogus/x", nil, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"unknown rule", "GET", base + "override/nope", nil, http.StatusNotFound, "M_NOT_FOUND"},
		{"enabled of unknown rule", "GET", base + "override/nope/enabled", nil, http.StatusNotFound, "M_NOT_FOUND"},
		{"enabled without value", "PUT", base + "override/.m.rule.master/enabled", map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM"},
		{"delete default rule", "DELETE", base + "override/.m.rule.master", nil, http.StatusBadRequest, "M_INVALID_PARAM"},
		{"delete unknown rule", "DELETE", base + "room/!nope:x", nil, http.StatusNotFound, "M_NOT_FOUND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := alice.Do(t, tt.method, tt.path, tt.body)
			if status != tt.status || body["errcode"] != tt.code {
				t.Errorf("%s %s = %d %v, want %d %s", tt.method, tt.path, status, body, tt.status, tt.code)
			}
		})
	}

	if r := alice.MustDo(t, "GET", base+"override/a", nil); r["enabled"] != true || r["default"] != false || len(r["conditions"].([]any)) != 1 {
		t.Errorf("rule a = %v", r)
	}
	alice.MustDo(t, "PUT", base+"override/.m.rule.master/enabled", map[string]any{"enabled": true})
	if r := alice.MustDo(t, "GET", base+"override/.m.rule.master/enabled", nil); r["enabled"] != true {
		t.Errorf("master enabled = %v", r)
	}
	alice.MustDo(t, "PUT", base+"underride/.m.rule.message/actions", map[string]any{"actions": []any{}})
	if r := alice.MustDo(t, "GET", base+"underride/.m.rule.message/actions", nil); len(r["actions"].([]any)) != 0 {
		t.Errorf("message actions = %v", r)
	}
	alice.MustDo(t, "PUT", base+"override/a/actions", map[string]any{"actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}})
	if r := alice.MustDo(t, "GET", base+"override/a", nil); len(r["actions"].([]any)) != 2 {
		t.Errorf("rule a after actions update = %v", r)
	}
	alice.MustDo(t, "PUT", base+"room/!quiet:x", map[string]any{"actions": []any{}})
	if r := alice.MustDo(t, "GET", base+"room/!quiet:x", nil); r["rule_id"] != "!quiet:x" || r["conditions"] != nil {
		t.Errorf("room rule = %v", r)
	}
	alice.MustDo(t, "DELETE", base+"override/a", nil)
	if status, _ := alice.Do(t, "GET", base+"override/a", nil); status != http.StatusNotFound {
		t.Errorf("deleted rule still served: %d", status)
	}

	// /sync carries the rules as m.push_rules account data.
	sync := alice.MustDo(t, "GET", "/_matrix/client/v3/sync", nil)
	found := false
	for _, e := range dig(sync, "account_data", "events").([]any) {
		em := e.(map[string]any)
		if em["type"] == "m.push_rules" {
			found = true
			if ids := ruleIDs(dig(em, "content", "global", "override")); len(ids) < 2 || ids[1] != "b" {
				t.Errorf("m.push_rules override %v", ids)
			}
		}
	}
	if !found {
		t.Error("no m.push_rules in /sync account data")
	}
}

func TestPushers(t *testing.T) {
	sh := shardtest.New(t)
	tn := sh.CreateTenant(t, "pushers")
	alice := tn.Register(t, "alice")
	bob := tn.Register(t, "bob")
	pusher := func(key string, extra map[string]any) map[string]any {
		p := map[string]any{"pushkey": key, "kind": "http", "app_id": "org.example.app", "app_display_name": "App",
			"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": "https://push.example.org/_matrix/push/v1/notify", "format": "event_id_only"}}
		for k, v := range extra {
			p[k] = v
		}
		return p
	}
	alice.MustDo(t, "POST", "/_matrix/client/v3/pushers/set", pusher("k1", nil))
	list := alice.MustDo(t, "GET", "/_matrix/client/v3/pushers", nil)["pushers"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["pushkey"] != "k1" || dig(list[0].(map[string]any), "data", "format") != "event_id_only" {
		t.Fatalf("pushers %v", list)
	}
	// Without append, the same app and pushkey registered by bob replaces alice's.
	bob.MustDo(t, "POST", "/_matrix/client/v3/pushers/set", pusher("k1", nil))
	if list := alice.MustDo(t, "GET", "/_matrix/client/v3/pushers", nil)["pushers"].([]any); len(list) != 0 {
		t.Errorf("alice's pusher survived bob's registration: %v", list)
	}
	alice.MustDo(t, "POST", "/_matrix/client/v3/pushers/set", pusher("k1", map[string]any{"append": true}))
	if list := bob.MustDo(t, "GET", "/_matrix/client/v3/pushers", nil)["pushers"].([]any); len(list) != 1 {
		t.Errorf("append removed bob's pusher: %v", list)
	}
	alice.MustDo(t, "POST", "/_matrix/client/v3/pushers/set", map[string]any{"pushkey": "k1", "app_id": "org.example.app", "kind": nil})
	if list := alice.MustDo(t, "GET", "/_matrix/client/v3/pushers", nil)["pushers"].([]any); len(list) != 0 {
		t.Errorf("kind null did not delete: %v", list)
	}

	tests := []struct {
		name string
		body map[string]any
		code string
	}{
		{"missing kind", map[string]any{"pushkey": "k", "app_id": "a"}, "M_MISSING_PARAM"},
		{"missing data", map[string]any{"pushkey": "k", "app_id": "a", "kind": "http", "app_display_name": "A", "device_display_name": "D", "lang": "en"}, "M_MISSING_PARAM"},
		{"missing url", pusher("k", map[string]any{"data": map[string]any{}}), "M_MISSING_PARAM"},
		{"wrong url path", pusher("k", map[string]any{"data": map[string]any{"url": "https://push.example.org/notify"}}), "M_INVALID_PARAM"},
		{"unknown kind", pusher("k", map[string]any{"kind": "carrier-pigeon"}), "M_INVALID_PARAM"},
		{"long app_id", pusher("k", map[string]any{"app_id": string(make([]byte, 65))}), "M_INVALID_PARAM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := alice.Do(t, "POST", "/_matrix/client/v3/pushers/set", tt.body)
			if status != http.StatusBadRequest || body["errcode"] != tt.code {
				t.Errorf("= %d %v, want 400 %s", status, body, tt.code)
			}
		})
	}

	n := alice.MustDo(t, "GET", "/_matrix/client/v3/notifications?limit=5&only=highlight", nil)
	if list, ok := n["notifications"].([]any); !ok || len(list) != 0 {
		t.Errorf("notifications %v", n)
	}
	if status, _ := alice.Do(t, "GET", "/_matrix/client/v3/notifications?limit=x", nil); status != http.StatusBadRequest {
		t.Errorf("bad limit accepted: %d", status)
	}
}
