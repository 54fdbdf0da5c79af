package push

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// StoredRule is the JSON of a user rule in push_rules.rule.
type StoredRule struct {
	Actions    []json.RawMessage `json:"actions"`
	Conditions []Condition       `json:"conditions,omitempty"`
	Pattern    *string           `json:"pattern,omitempty"`
}

// LoadRulesets reads the rulesets of users.
func LoadRulesets(ctx context.Context, q pgdb.DBTX, userIDs []string) (map[string]Ruleset, error) {
	rules, err := storage.PushRules(ctx, q, userIDs)
	if err != nil {
		return nil, err
	}
	overrides, err := storage.PushRuleOverrides(ctx, q, userIDs)
	if err != nil {
		return nil, err
	}
	user := map[string][]UserRule{}
	for _, r := range rules {
		var sr StoredRule
		if err := json.Unmarshal(r.Rule, &sr); err != nil {
			return nil, fmt.Errorf("decode push rule %s of %s: %w", r.RuleID, r.UserID, err)
		}
		user[r.UserID] = append(user[r.UserID], UserRule{Kind: r.Kind, RuleID: r.RuleID, Actions: sr.Actions,
			Conditions: sr.Conditions, Pattern: sr.Pattern})
	}
	ovs := map[string][]Override{}
	for _, o := range overrides {
		ov := Override{Kind: o.Kind, RuleID: o.RuleID, Enabled: o.Enabled}
		if len(o.Actions) > 0 {
			if err := json.Unmarshal(o.Actions, &ov.Actions); err != nil {
				return nil, fmt.Errorf("decode push rule actions %s of %s: %w", o.RuleID, o.UserID, err)
			}
		}
		ovs[o.UserID] = append(ovs[o.UserID], ov)
	}
	out := make(map[string]Ruleset, len(userIDs))
	for _, u := range userIDs {
		out[u] = Build(u, user[u], ovs[u])
	}
	return out, nil
}

// LoadRuleset reads one user's ruleset.
func LoadRuleset(ctx context.Context, q pgdb.DBTX, userID string) (Ruleset, error) {
	m, err := LoadRulesets(ctx, q, []string{userID})
	if err != nil {
		return Ruleset{}, err
	}
	return m[userID], nil
}

// Evaluator records push verdicts for persisted events and wakes the pusher worker.
type Evaluator struct {
	log  *slog.Logger
	wake func(*storage.Store)
}

// NewEvaluator returns an evaluator; wake (may be nil) is called with the tenant's store
// after verdicts that notify were written.
func NewEvaluator(log *slog.Logger, wake func(*storage.Store)) *Evaluator {
	return &Evaluator{log: log, wake: wake}
}

// powerLevels is the part of m.room.power_levels the rules need.
type powerLevels struct {
	Users         map[string]json.Number `json:"users"`
	UsersDefault  json.Number            `json:"users_default"`
	Notifications map[string]json.Number `json:"notifications"`
}

func num(n json.Number, def int64) int64 {
	if n == "" {
		return def
	}
	if i, err := n.Int64(); err == nil {
		return i
	}
	if f, err := n.Float64(); err == nil {
		return int64(f)
	}
	return def
}

// Process evaluates p for every joined local member of its room except the sender and those
// ignoring the sender (and for a local invitee of an invite), stores the verdicts in one transaction and wakes the pusher
// worker when any notifies.
func (e *Evaluator) Process(ctx context.Context, store *storage.Store, serverName spec.ServerName, p rooms.Persisted) error {
	if p.Event == nil {
		return nil
	}
	sender := string(p.Event.SenderID())
	ev, err := ParseEvent(p.Event.JSON())
	if err != nil {
		return fmt.Errorf("process %s: %w", p.EventID, err)
	}
	suffix := ":" + string(serverName)
	notified, stored := false, 0
	err = store.Tx(ctx, func(q pgdb.DBTX) error {
		joined, err := storage.RoomMembers(ctx, q, p.RoomID, spec.Join)
		if err != nil {
			return err
		}
		var targets []string
		for _, u := range joined {
			if u != sender && strings.HasSuffix(u, suffix) {
				targets = append(targets, u)
			}
		}
		if sk := p.Event.StateKey(); p.Event.Type() == spec.MRoomMember && sk != nil && *sk != sender &&
			strings.HasSuffix(*sk, suffix) {
			if m, _ := ev.String("content.membership"); m == spec.Invite {
				targets = append(targets, *sk)
			}
		}
		ignoring, err := storage.UsersIgnoring(ctx, q, targets, sender)
		if err != nil {
			return err
		}
		targets = slices.DeleteFunc(targets, func(u string) bool { return ignoring[u] })
		if len(targets) == 0 {
			return nil
		}
		tuples := []storage.StateKeyTuple{{Type: spec.MRoomPowerLevels}, {Type: spec.MRoomCreate}}
		for _, u := range targets {
			tuples = append(tuples, storage.StateKeyTuple{Type: spec.MRoomMember, StateKey: u})
		}
		state, err := storage.CurrentStateEvents(ctx, q, p.RoomID, tuples)
		if err != nil {
			return err
		}
		names := map[string]string{}
		var pl *powerLevels
		creator := ""
		for _, s := range state {
			var c struct {
				Content json.RawMessage `json:"content"`
			}
			if json.Unmarshal(s.JSON, &c) != nil {
				continue
			}
			switch s.Type {
			case spec.MRoomPowerLevels:
				pl = &powerLevels{}
				if json.Unmarshal(c.Content, pl) != nil {
					pl = &powerLevels{}
				}
			case spec.MRoomCreate:
				var cc struct {
					Creator string `json:"creator"`
				}
				_ = json.Unmarshal(c.Content, &cc)
				creator = cc.Creator
				if creator == "" {
					creator = s.Sender
				}
			case spec.MRoomMember:
				var mc struct {
					DisplayName string `json:"displayname"`
				}
				_ = json.Unmarshal(c.Content, &mc)
				if s.StateKey != nil {
					names[*s.StateKey] = mc.DisplayName
				}
			}
		}
		var senderLevel int64
		levels := map[string]int64{}
		if pl != nil {
			senderLevel = num(pl.UsersDefault, 0)
			if l, ok := pl.Users[sender]; ok {
				senderLevel = num(l, senderLevel)
			}
			for k, v := range pl.Notifications {
				levels[k] = num(v, 50)
			}
		} else if sender == creator {
			senderLevel = 100
		}
		rulesets, err := LoadRulesets(ctx, q, targets)
		if err != nil {
			return err
		}
		thread := threadID(ev)
		var out []storage.PushAction
		for _, u := range targets {
			rs := rulesets[u]
			res := Evaluate(&rs, ev, Context{UserID: u, DisplayName: names[u], MemberCount: len(joined),
				SenderPowerLevel: senderLevel, NotificationLevels: levels})
			if !res.Notify && !res.Highlight {
				continue
			}
			b, err := json.Marshal(res.Actions)
			if err != nil {
				return err
			}
			out = append(out, storage.PushAction{UserID: u, RoomID: p.RoomID, EventID: p.EventID, StreamPos: p.StreamPos,
				ThreadID: thread, Notify: res.Notify, Highlight: res.Highlight, Actions: b})
			notified = notified || res.Notify
		}
		stored = len(out)
		return storage.InsertPushActions(ctx, q, out)
	})
	if err != nil {
		return fmt.Errorf("process push rules for %s: %w", p.EventID, err)
	}
	e.log.Debug("push verdicts stored", "tenant", p.TenantID, "event_id", p.EventID, "count", stored)
	if notified && e.wake != nil {
		e.wake(store)
	}
	return nil
}

// threadID is the thread root of an event in a thread, else "main".
func threadID(ev *Event) string {
	if rt, _ := ev.String(`content.m\.relates_to.rel_type`); rt == "m.thread" {
		if root, ok := ev.String(`content.m\.relates_to.event_id`); ok && root != "" {
			return root
		}
	}
	return "main"
}
