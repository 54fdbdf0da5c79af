// Package push evaluates a user's push rules against events: the spec's default rule set, the
// user's own rules and overrides, the condition kinds of the Client-Server API, and an
// Evaluator that records each local member's verdict in event_push_actions after an event
// commits.
package push

import (
	"encoding/json"
	"strings"
)

// Kinds of push rules, in evaluation order.
const (
	KindOverride  = "override"
	KindContent   = "content"
	KindRoom      = "room"
	KindSender    = "sender"
	KindUnderride = "underride"
)

// Kinds lists the rule kinds in evaluation order.
var kinds = [...]string{KindOverride, KindContent, KindRoom, KindSender, KindUnderride}

// Kinds returns the rule kinds in evaluation order.
func Kinds() []string { return kinds[:] }

// ValidKind reports whether k is a push rule kind.
func ValidKind(k string) bool {
	for _, x := range kinds {
		if x == k {
			return true
		}
	}
	return false
}

// Condition is one condition of a push rule. Value keeps its JSON type (string, integer,
// boolean or null) for event_property_is and event_property_contains.
type Condition struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key,omitempty"`
	Pattern *string         `json:"pattern,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`
	Is      string          `json:"is,omitempty"`
}

// Rule is a push rule as the Client-Server API shows it.
type Rule struct {
	RuleID     string            `json:"rule_id"`
	Default    bool              `json:"default"`
	Enabled    bool              `json:"enabled"`
	Actions    []json.RawMessage `json:"actions"`
	Conditions []Condition       `json:"conditions,omitempty"`
	Pattern    *string           `json:"pattern,omitempty"`
}

// Ruleset is a user's global rules by kind, each in priority order.
type Ruleset struct {
	Override  []Rule `json:"override"`
	Content   []Rule `json:"content"`
	Room      []Rule `json:"room"`
	Sender    []Rule `json:"sender"`
	Underride []Rule `json:"underride"`
}

// Kind returns the rules of one kind.
func (rs *Ruleset) Kind(kind string) *[]Rule {
	switch kind {
	case KindOverride:
		return &rs.Override
	case KindContent:
		return &rs.Content
	case KindRoom:
		return &rs.Room
	case KindSender:
		return &rs.Sender
	case KindUnderride:
		return &rs.Underride
	}
	return nil
}

// Find returns the rule of kind with id, or nil.
func (rs *Ruleset) Find(kind, id string) *Rule {
	list := rs.Kind(kind)
	if list == nil {
		return nil
	}
	for i := range *list {
		if (*list)[i].RuleID == id {
			return &(*list)[i]
		}
	}
	return nil
}

// UserRule is a rule the user added, as stored.
type UserRule struct {
	Kind       string
	RuleID     string
	Actions    []json.RawMessage
	Conditions []Condition
	Pattern    *string
}

// Override changes a rule's enabled flag or (for default rules) its actions.
type Override struct {
	Kind    string
	RuleID  string
	Enabled *bool
	Actions []json.RawMessage // nil: unchanged
}

// Build merges the server-default rules of userID with the user's own rules (each kind's
// rules in priority order) and overrides. User override rules follow .m.rule.master and
// precede the other default override rules; user content, room and sender rules precede the
// defaults of their kind, as do user underride rules.
func Build(userID string, user []UserRule, overrides []Override) Ruleset {
	def := Defaults(userID)
	var rs Ruleset
	byKind := map[string][]Rule{}
	for _, u := range user {
		r := Rule{RuleID: u.RuleID, Enabled: true, Actions: u.Actions, Conditions: u.Conditions, Pattern: u.Pattern}
		if r.Actions == nil {
			r.Actions = []json.RawMessage{}
		}
		switch u.Kind {
		case KindRoom:
			r.Conditions = []Condition{{Kind: "event_match", Key: "room_id", Pattern: strPtr(u.RuleID)}}
		case KindSender:
			r.Conditions = []Condition{{Kind: "event_match", Key: "sender", Pattern: strPtr(u.RuleID)}}
		case KindOverride, KindUnderride:
			if r.Conditions == nil {
				r.Conditions = []Condition{}
			}
		}
		byKind[u.Kind] = append(byKind[u.Kind], r)
	}
	for _, k := range kinds {
		list := rs.Kind(k)
		defs := *def.Kind(k)
		if k == KindOverride && len(defs) > 0 && defs[0].RuleID == ".m.rule.master" {
			*list = append(*list, defs[0])
			defs = defs[1:]
		}
		*list = append(*list, byKind[k]...)
		*list = append(*list, defs...)
		if *list == nil {
			*list = []Rule{}
		}
	}
	for _, o := range overrides {
		r := rs.Find(o.Kind, o.RuleID)
		if r == nil {
			continue
		}
		if o.Enabled != nil {
			r.Enabled = *o.Enabled
		}
		if o.Actions != nil && r.Default {
			r.Actions = o.Actions
		}
	}
	return rs
}

func strPtr(s string) *string { return &s }

// IsDefaultID reports whether id names a server-default rule.
func IsDefaultID(id string) bool { return strings.HasPrefix(id, ".") }

// Action helpers.

var (
	actNotify       = json.RawMessage(`"notify"`)
	actSoundDefault = json.RawMessage(`{"set_tweak":"sound","value":"default"}`)
	actSoundRing    = json.RawMessage(`{"set_tweak":"sound","value":"ring"}`)
	actHighlight    = json.RawMessage(`{"set_tweak":"highlight"}`)
)

func match(key, pattern string) Condition {
	return Condition{Kind: "event_match", Key: key, Pattern: strPtr(pattern)}
}

func propIs(key, value string) Condition {
	return Condition{Kind: "event_property_is", Key: key, Value: json.RawMessage(value)}
}

func acts(a ...json.RawMessage) []json.RawMessage {
	if a == nil {
		return []json.RawMessage{}
	}
	return a
}

// Defaults returns the spec's server-default rules for userID, all enabled except
// .m.rule.master.
func Defaults(userID string) Ruleset {
	local := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(local, ':'); i >= 0 {
		local = local[:i]
	}
	uid, _ := json.Marshal(userID)
	d := func(id string, actions []json.RawMessage, conds ...Condition) Rule {
		if conds == nil {
			conds = []Condition{}
		}
		return Rule{RuleID: id, Default: true, Enabled: true, Actions: actions, Conditions: conds}
	}
	master := d(".m.rule.master", acts())
	master.Enabled = false
	return Ruleset{
		Override: []Rule{
			master,
			d(".m.rule.suppress_notices", acts(), match("content.msgtype", "m.notice")),
			d(".m.rule.invite_for_me", acts(actNotify, actSoundDefault),
				match("type", "m.room.member"), match("content.membership", "invite"), match("state_key", userID)),
			d(".m.rule.member_event", acts(), match("type", "m.room.member")),
			d(".m.rule.is_user_mention", acts(actNotify, actSoundDefault, actHighlight),
				Condition{Kind: "event_property_contains", Key: `content.m\.mentions.user_ids`, Value: uid}),
			d(".m.rule.contains_display_name", acts(actNotify, actSoundDefault, actHighlight),
				Condition{Kind: "contains_display_name"}),
			d(".m.rule.is_room_mention", acts(actNotify, actHighlight),
				propIs(`content.m\.mentions.room`, "true"),
				Condition{Kind: "sender_notification_permission", Key: "room"}),
			d(".m.rule.roomnotif", acts(actNotify, actHighlight),
				Condition{Kind: "sender_notification_permission", Key: "room"}, match("content.body", "@room")),
			d(".m.rule.tombstone", acts(actNotify, actHighlight),
				match("type", "m.room.tombstone"), match("state_key", "")),
			d(".m.rule.reaction", acts(), match("type", "m.reaction")),
			d(".m.rule.server_acl", acts(), match("type", "m.room.server_acl"), match("state_key", "")),
			d(".m.rule.suppress_edits", acts(), propIs(`content.m\.relates_to.rel_type`, `"m.replace"`)),
		},
		Content: []Rule{{
			RuleID: ".m.rule.contains_user_name", Default: true, Enabled: true, Pattern: strPtr(local),
			Actions: acts(actNotify, actSoundDefault, actHighlight),
		}},
		Room:   []Rule{},
		Sender: []Rule{},
		Underride: []Rule{
			d(".m.rule.call", acts(actNotify, actSoundRing), match("type", "m.call.invite")),
			d(".m.rule.encrypted_room_one_to_one", acts(actNotify, actSoundDefault),
				Condition{Kind: "room_member_count", Is: "2"}, match("type", "m.room.encrypted")),
			d(".m.rule.room_one_to_one", acts(actNotify, actSoundDefault),
				Condition{Kind: "room_member_count", Is: "2"}, match("type", "m.room.message")),
			d(".m.rule.message", acts(actNotify), match("type", "m.room.message")),
			d(".m.rule.encrypted", acts(actNotify), match("type", "m.room.encrypted")),
		},
	}
}
