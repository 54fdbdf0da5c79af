package push_test

import (
	"encoding/json"
	"testing"

	"github.com/atoll-matrix/atoll/homeserver/push"
)

const alice = "@alice:example.org"

func boolPtr(b bool) *bool { return &b }

func TestEvaluateDefaults(t *testing.T) {
	group := push.Context{UserID: alice, DisplayName: "Alice Liddell", MemberCount: 5, SenderPowerLevel: 0}
	dm := group
	dm.MemberCount = 2
	mod := group
	mod.SenderPowerLevel = 50
	strictRoom := mod
	strictRoom.NotificationLevels = map[string]int64{"room": 100}

	tests := []struct {
		name      string
		event     string
		ctx       push.Context
		overrides []push.Override
		user      []push.UserRule
		rule      string
		notify    bool
		highlight bool
		sound     string
	}{
		{"plain message in group", `{"type":"m.room.message","sender":"@bob:example.org","content":{"msgtype":"m.text","body":"hello"}}`,
			group, nil, nil, ".m.rule.message", true, false, ""},
		{"message in one-to-one room", `{"type":"m.room.message","sender":"@bob:example.org","content":{"body":"hi"}}`,
			dm, nil, nil, ".m.rule.room_one_to_one", true, false, "default"},
		{"encrypted in one-to-one room", `{"type":"m.room.encrypted","sender":"@bob:example.org","content":{}}`,
			dm, nil, nil, ".m.rule.encrypted_room_one_to_one", true, false, "default"},
		{"encrypted in group", `{"type":"m.room.encrypted","sender":"@bob:example.org","content":{}}`,
			group, nil, nil, ".m.rule.encrypted", true, false, ""},
		{"notice suppressed", `{"type":"m.room.message","content":{"msgtype":"m.notice","body":"bot says alice"}}`,
			group, nil, nil, ".m.rule.suppress_notices", false, false, ""},
		{"user mention", `{"type":"m.room.message","content":{"body":"hey","m.mentions":{"user_ids":["@alice:example.org"]}}}`,
			group, nil, nil, ".m.rule.is_user_mention", true, true, "default"},
		{"mention of someone else skips legacy body rules", `{"type":"m.room.message","content":{"body":"alice: hi","m.mentions":{"user_ids":["@carol:example.org"]}}}`,
			group, nil, nil, ".m.rule.message", true, false, ""},
		{"display name in body", `{"type":"m.room.message","content":{"body":"hi alice liddell!"}}`,
			group, nil, nil, ".m.rule.contains_display_name", true, true, "default"},
		{"display name needs word boundary", `{"type":"m.room.message","content":{"body":"xalice liddellx"}}`,
			group, nil, nil, ".m.rule.message", true, false, ""},
		{"localpart in body", `{"type":"m.room.message","content":{"body":"ping ALICE."}}`,
			group, nil, nil, ".m.rule.contains_user_name", true, true, "default"},
		{"room mention by moderator", `{"type":"m.room.message","content":{"body":"all","m.mentions":{"room":true}}}`,
			mod, nil, nil, ".m.rule.is_room_mention", true, true, ""},
		{"room mention without permission", `{"type":"m.room.message","content":{"body":"all","m.mentions":{"room":true}}}`,
			group, nil, nil, ".m.rule.message", true, false, ""},
		{"room mention as string is not true", `{"type":"m.room.message","content":{"body":"all","m.mentions":{"room":"true"}}}`,
			mod, nil, nil, ".m.rule.message", true, false, ""},
		{"@room legacy by moderator", `{"type":"m.room.message","content":{"body":"@room look"}}`,
			mod, nil, nil, ".m.rule.roomnotif", true, true, ""},
		{"@room below notifications.room level", `{"type":"m.room.message","content":{"body":"@room look"}}`,
			strictRoom, nil, nil, ".m.rule.message", true, false, ""},
		{"edit suppressed", `{"type":"m.room.message","content":{"body":"* alice","m.relates_to":{"rel_type":"m.replace","event_id":"$x"}}}`,
			group, nil, nil, ".m.rule.suppress_edits", false, false, ""},
		{"reaction", `{"type":"m.reaction","content":{"m.relates_to":{"rel_type":"m.annotation","key":"👍"}}}`,
			group, nil, nil, ".m.rule.reaction", false, false, ""},
		{"invite for me", `{"type":"m.room.member","state_key":"@alice:example.org","content":{"membership":"invite"}}`,
			group, nil, nil, ".m.rule.invite_for_me", true, false, "default"},
		{"invite for someone else", `{"type":"m.room.member","state_key":"@carol:example.org","content":{"membership":"invite"}}`,
			group, nil, nil, ".m.rule.member_event", false, false, ""},
		{"tombstone", `{"type":"m.room.tombstone","state_key":"","content":{"replacement_room":"!n:x"}}`,
			group, nil, nil, ".m.rule.tombstone", true, true, ""},
		{"server acl", `{"type":"m.room.server_acl","state_key":"","content":{}}`,
			group, nil, nil, ".m.rule.server_acl", false, false, ""},
		{"call invite", `{"type":"m.call.invite","content":{}}`,
			group, nil, nil, ".m.rule.call", true, false, "ring"},
		{"other event type", `{"type":"m.room.topic","state_key":"","content":{"topic":"alice"}}`,
			group, nil, nil, "", false, false, ""},
		{"master enabled silences everything", `{"type":"m.room.message","content":{"body":"alice","m.mentions":{"user_ids":["@alice:example.org"]}}}`,
			group, []push.Override{{Kind: "override", RuleID: ".m.rule.master", Enabled: boolPtr(true)}}, nil, ".m.rule.master", false, false, ""},
		{"disabled default rule falls through", `{"type":"m.room.message","content":{"body":"hi"}}`,
			dm, []push.Override{{Kind: "underride", RuleID: ".m.rule.room_one_to_one", Enabled: boolPtr(false)}}, nil, ".m.rule.message", true, false, ""},
		{"changed default actions", `{"type":"m.room.message","content":{"body":"hi"}}`,
			group, []push.Override{{Kind: "underride", RuleID: ".m.rule.message", Actions: []json.RawMessage{}}}, nil, ".m.rule.message", false, false, ""},
		{"user room rule mutes room", `{"type":"m.room.message","room_id":"!quiet:example.org","content":{"body":"hi"}}`,
			group, nil, []push.UserRule{{Kind: "room", RuleID: "!quiet:example.org", Actions: []json.RawMessage{}}}, "!quiet:example.org", false, false, ""},
		{"user keyword rule", `{"type":"m.room.message","content":{"body":"the deploy is done"}}`,
			group, nil, []push.UserRule{{Kind: "content", RuleID: "kw", Pattern: strp("deplo?"), Actions: []json.RawMessage{json.RawMessage(`"notify"`), json.RawMessage(`{"set_tweak":"highlight"}`)}}}, "kw", true, true, ""},
		{"user override with event_property_is integer", `{"type":"m.room.message","content":{"body":"x","level":3}}`,
			group, nil, []push.UserRule{{Kind: "override", RuleID: "lvl", Conditions: []push.Condition{{Kind: "event_property_is", Key: "content.level", Value: json.RawMessage(`3`)}}, Actions: []json.RawMessage{json.RawMessage(`"notify"`), json.RawMessage(`{"set_tweak":"highlight","value":true}`)}}}, "lvl", true, true, ""},
		{"event_property_is null and dotted key escaping", `{"type":"m.room.message","content":{"a.b":{"c\\d":null}}}`,
			group, nil, []push.UserRule{{Kind: "override", RuleID: "esc", Conditions: []push.Condition{{Kind: "event_property_is", Key: `content.a\.b.c\\d`, Value: json.RawMessage(`null`)}}, Actions: []json.RawMessage{json.RawMessage(`"notify"`)}}}, "esc", true, false, ""},
		{"event_match glob on type", `{"type":"org.example.ping","content":{}}`,
			group, nil, []push.UserRule{{Kind: "underride", RuleID: "g", Conditions: []push.Condition{{Kind: "event_match", Key: "type", Pattern: strp("ORG.example.*")}}, Actions: []json.RawMessage{json.RawMessage(`"notify"`)}}}, "g", true, false, ""},
		{"event_match needs whole value outside body", `{"type":"org.example.ping","content":{}}`,
			group, nil, []push.UserRule{{Kind: "underride", RuleID: "g", Conditions: []push.Condition{{Kind: "event_match", Key: "type", Pattern: strp("example")}}, Actions: []json.RawMessage{json.RawMessage(`"notify"`)}}}, "", false, false, ""},
		{"unknown condition never matches", `{"type":"m.room.message","content":{"body":"x"}}`,
			group, nil, []push.UserRule{{Kind: "override", RuleID: "u", Conditions: []push.Condition{{Kind: "org.example.future"}}, Actions: []json.RawMessage{json.RawMessage(`"notify"`), json.RawMessage(`{"set_tweak":"highlight"}`)}}}, ".m.rule.message", true, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := push.ParseEvent([]byte(tt.event))
			if err != nil {
				t.Fatal(err)
			}
			rs := push.Build(alice, tt.user, tt.overrides)
			res := push.Evaluate(&rs, ev, tt.ctx)
			if res.RuleID != tt.rule || res.Notify != tt.notify || res.Highlight != tt.highlight || res.Sound != tt.sound {
				t.Errorf("got rule %q notify %v highlight %v sound %q; want %q %v %v %q",
					res.RuleID, res.Notify, res.Highlight, res.Sound, tt.rule, tt.notify, tt.highlight, tt.sound)
			}
		})
	}
}

func strp(s string) *string { return &s }

func TestRoomMemberCount(t *testing.T) {
	tests := []struct {
		is    string
		count int
		want  bool
	}{
		{"2", 2, true}, {"==2", 3, false}, {"<3", 2, true}, {"<3", 3, false}, {">3", 4, true},
		{"<=3", 3, true}, {">=3", 2, false}, {">=3", 3, true}, {"x", 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.is, func(t *testing.T) {
			rs := push.Build(alice, []push.UserRule{{Kind: "override", RuleID: "c",
				Conditions: []push.Condition{{Kind: "room_member_count", Is: tt.is}}, Actions: []json.RawMessage{json.RawMessage(`"notify"`)}}}, nil)
			ev, _ := push.ParseEvent([]byte(`{"type":"x.y","content":{}}`))
			got := push.Evaluate(&rs, ev, push.Context{UserID: alice, MemberCount: tt.count}).RuleID == "c"
			if got != tt.want {
				t.Errorf("is %q with %d members = %v, want %v", tt.is, tt.count, got, tt.want)
			}
		})
	}
}

func TestBuildOrder(t *testing.T) {
	rs := push.Build(alice, []push.UserRule{{Kind: "override", RuleID: "mine"}}, nil)
	if rs.Override[0].RuleID != ".m.rule.master" || rs.Override[1].RuleID != "mine" || rs.Override[2].RuleID != ".m.rule.suppress_notices" {
		t.Errorf("override order: %s, %s, %s", rs.Override[0].RuleID, rs.Override[1].RuleID, rs.Override[2].RuleID)
	}
	want := map[string]bool{}
	for _, id := range []string{".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
		".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention", ".m.rule.roomnotif",
		".m.rule.tombstone", ".m.rule.reaction", ".m.rule.server_acl", ".m.rule.suppress_edits", ".m.rule.contains_user_name",
		".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"} {
		want[id] = true
	}
	d := push.Defaults(alice)
	for _, k := range push.Kinds() {
		for _, r := range *d.Kind(k) {
			if !want[r.RuleID] {
				t.Errorf("unexpected default %s", r.RuleID)
			}
			delete(want, r.RuleID)
		}
	}
	for id := range want {
		t.Errorf("missing default %s", id)
	}
}
