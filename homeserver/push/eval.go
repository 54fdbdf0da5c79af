package push

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Event is an event flattened for condition matching: every leaf (string, number, boolean,
// null) and array of the event JSON under its dotted key, with dots and backslashes inside a
// field name escaped by a backslash (content.m\.relates_to.rel_type).
type Event struct {
	fields      map[string]any
	hasMentions bool
}

// ParseEvent flattens an event's JSON.
func ParseEvent(eventJSON []byte) (*Event, error) {
	dec := json.NewDecoder(bytes.NewReader(eventJSON))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	ev := &Event{fields: map[string]any{}}
	flatten(ev.fields, "", m)
	if c, ok := m["content"].(map[string]any); ok {
		_, ev.hasMentions = c["m.mentions"]
	}
	return ev, nil
}

func escapeKey(k string) string {
	return strings.NewReplacer(`\`, `\\`, `.`, `\.`).Replace(k)
}

func flatten(out map[string]any, prefix string, m map[string]any) {
	for k, v := range m {
		key := escapeKey(k)
		if prefix != "" {
			key = prefix + "." + key
		}
		switch v := v.(type) {
		case map[string]any:
			flatten(out, key, v)
		default:
			out[key] = v
		}
	}
}

// String returns the string at key.
func (e *Event) String(key string) (string, bool) {
	s, ok := e.fields[key].(string)
	return s, ok
}

// Context is what the rules of one user see beside the event.
type Context struct {
	UserID      string
	DisplayName string // the user's display name in the room, "" if none
	MemberCount int    // joined members of the room
	// SenderPowerLevel and NotificationLevels (power_levels.notifications, e.g. "room")
	// decide sender_notification_permission.
	SenderPowerLevel   int64
	NotificationLevels map[string]int64
}

// Result is the outcome of evaluating a ruleset on an event for one user.
type Result struct {
	RuleID    string // the matching rule, "" if none
	Actions   []json.RawMessage
	Notify    bool
	Highlight bool
	Sound     string
}

// legacyMentionRules are skipped for events carrying m.mentions (intentional mentions).
var legacyMentionRules = map[string]bool{
	".m.rule.contains_display_name": true,
	".m.rule.contains_user_name":    true,
	".m.rule.roomnotif":             true,
}

// Evaluate runs the rules in priority order and returns the first enabled matching rule's
// actions.
func Evaluate(rs *Ruleset, ev *Event, c Context) Result {
	for _, kind := range kinds {
		for _, r := range *rs.Kind(kind) {
			if !r.Enabled || (ev.hasMentions && legacyMentionRules[r.RuleID]) {
				continue
			}
			if ruleMatches(kind, &r, ev, c) {
				res := Result{RuleID: r.RuleID, Actions: r.Actions}
				res.Notify, res.Highlight, res.Sound = ParseActions(r.Actions)
				return res
			}
		}
	}
	return Result{}
}

func ruleMatches(kind string, r *Rule, ev *Event, c Context) bool {
	if kind == KindContent {
		if r.Pattern == nil {
			return false
		}
		return conditionMatches(Condition{Kind: "event_match", Key: "content.body", Pattern: r.Pattern}, ev, c)
	}
	for _, cond := range r.Conditions {
		if !conditionMatches(cond, ev, c) {
			return false
		}
	}
	return true
}

// ParseActions reads notify and the highlight and sound tweaks from actions.
func ParseActions(actions []json.RawMessage) (notify, highlight bool, sound string) {
	for _, a := range actions {
		var s string
		if json.Unmarshal(a, &s) == nil {
			if s == "notify" {
				notify = true
			}
			continue
		}
		var t struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(a, &t) != nil {
			continue
		}
		switch t.SetTweak {
		case "highlight":
			var b bool
			highlight = len(t.Value) == 0 || (json.Unmarshal(t.Value, &b) == nil && b)
		case "sound":
			_ = json.Unmarshal(t.Value, &sound)
		}
	}
	return notify, highlight, sound
}

func conditionMatches(cond Condition, ev *Event, c Context) bool {
	switch cond.Kind {
	case "event_match":
		if cond.Pattern == nil || cond.Key == "" {
			return false
		}
		v, ok := ev.String(cond.Key)
		if !ok {
			return false
		}
		return globMatch(*cond.Pattern, v, cond.Key == "content.body")
	case "event_property_is":
		want, ok := decodeValue(cond.Value)
		if !ok {
			return false
		}
		got, present := ev.fields[cond.Key]
		return present && valueEqual(got, want)
	case "event_property_contains":
		want, ok := decodeValue(cond.Value)
		if !ok {
			return false
		}
		arr, _ := ev.fields[cond.Key].([]any)
		for _, v := range arr {
			if valueEqual(v, want) {
				return true
			}
		}
		return false
	case "contains_display_name":
		body, ok := ev.String("content.body")
		if !ok || c.DisplayName == "" {
			return false
		}
		return matchRegexp(wordPattern(regexp.QuoteMeta(c.DisplayName)), body)
	case "room_member_count":
		return memberCountMatches(cond.Is, c.MemberCount)
	case "sender_notification_permission":
		if cond.Key == "" {
			return false
		}
		level, ok := c.NotificationLevels[cond.Key]
		if !ok {
			level = 50
		}
		return c.SenderPowerLevel >= level
	}
	return false // unknown conditions never match
}

// decodeValue parses an event_property_* value, which must be a string, integer, boolean or
// null.
func decodeValue(raw json.RawMessage) (any, bool) {
	if len(raw) == 0 {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	switch v.(type) {
	case string, bool, nil, json.Number:
		return v, true
	}
	return nil, false
}

func valueEqual(a, b any) bool {
	switch a := a.(type) {
	case string:
		bs, ok := b.(string)
		return ok && a == bs
	case bool:
		bb, ok := b.(bool)
		return ok && a == bb
	case nil:
		return b == nil
	case json.Number:
		bn, ok := b.(json.Number)
		if !ok {
			return false
		}
		ai, err1 := strconv.ParseInt(a.String(), 10, 64)
		bi, err2 := strconv.ParseInt(bn.String(), 10, 64)
		if err1 == nil && err2 == nil {
			return ai == bi
		}
		return a == bn
	}
	return false
}

// globToRegexp turns a glob (* any run, ? one character) into a regexp body.
func globToRegexp(glob string) string {
	var b strings.Builder
	for _, r := range glob {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	return b.String()
}

// wordPattern matches body between word boundaries: the value's ends or characters outside
// [A-Za-z0-9_].
func wordPattern(body string) string {
	return `(?is)(?:^|\W)(?:` + body + `)(?:\W|$)`
}

func matchRegexp(expr, value string) bool {
	re, err := regexp.Compile(expr)
	return err == nil && re.MatchString(value)
}

// globMatch matches value case-insensitively: the whole value, or for content.body any
// word-bounded part of it.
func globMatch(glob, value string, words bool) bool {
	if words {
		return matchRegexp(wordPattern(globToRegexp(glob)), value)
	}
	return matchRegexp(`(?is)^(?:`+globToRegexp(glob)+`)$`, value)
}

func memberCountMatches(is string, count int) bool {
	op := ""
	for _, p := range []string{"==", "<=", ">=", "<", ">"} {
		if strings.HasPrefix(is, p) {
			op, is = p, is[len(p):]
			break
		}
	}
	n, err := strconv.Atoi(is)
	if err != nil {
		return false
	}
	switch op {
	case "", "==":
		return count == n
	case "<":
		return count < n
	case ">":
		return count > n
	case "<=":
		return count <= n
	case ">=":
		return count >= n
	}
	return false
}
