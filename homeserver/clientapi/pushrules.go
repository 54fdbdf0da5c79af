package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/atoll-matrix/atoll/homeserver/push"
	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/mxhttp"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Push rules: GET /pushrules/, and one rule's body, enabled flag and actions.

// renderRule is a rule as the API shows it: room and sender rules carry no conditions.
func renderRule(kind string, r push.Rule) push.Rule {
	if kind == push.KindRoom || kind == push.KindSender {
		r.Conditions = nil
	}
	return r
}

func renderRuleset(rs push.Ruleset) push.Ruleset {
	for _, k := range push.Kinds() {
		list := rs.Kind(k)
		out := make([]push.Rule, 0, len(*list))
		for _, r := range *list {
			out = append(out, renderRule(k, r))
		}
		*list = out
	}
	return rs
}

func (s *Server) getPushRules(w http.ResponseWriter, r *http.Request, sess *Session) error {
	var rs push.Ruleset
	err := sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		var err error
		rs, err = push.LoadRuleset(r.Context(), q, sess.UserID)
		return err
	})
	if err != nil {
		return err
	}
	rs = renderRuleset(rs)
	if r.PathValue("scope") != "" {
		if r.PathValue("scope") != "global" {
			return mxhttp.NotFound("unknown push rule scope")
		}
		return mxhttp.JSON(w, http.StatusOK, rs)
	}
	return mxhttp.JSON(w, http.StatusOK, map[string]any{"global": rs})
}

// pushRulePath reads {scope}/{kind}/{ruleID}.
func pushRulePath(r *http.Request) (kind, ruleID string, err error) {
	if r.PathValue("scope") != "global" {
		return "", "", mxhttp.InvalidParam("push rule scope must be global")
	}
	kind, ruleID = r.PathValue("kind"), r.PathValue("ruleID")
	if !push.ValidKind(kind) {
		return "", "", mxhttp.InvalidParam("unknown push rule kind %q", truncate(kind, 40))
	}
	if ruleID == "" || len(ruleID) > 255 || strings.ContainsAny(ruleID, `/\`) {
		return "", "", mxhttp.InvalidParam("invalid push rule ID")
	}
	return kind, ruleID, nil
}

// findRule loads the user's ruleset and the rule, or M_NOT_FOUND.
func findRule(ctx context.Context, q pgdb.DBTX, userID, kind, ruleID string) (push.Ruleset, *push.Rule, error) {
	rs, err := push.LoadRuleset(ctx, q, userID)
	if err != nil {
		return rs, nil, err
	}
	rule := rs.Find(kind, ruleID)
	if rule == nil {
		return rs, nil, mxhttp.NotFound("push rule not found")
	}
	return rs, rule, nil
}

func (s *Server) getPushRule(w http.ResponseWriter, r *http.Request, sess *Session) error {
	kind, ruleID, err := pushRulePath(r)
	if err != nil {
		return err
	}
	var rule push.Rule
	err = sess.T.Store.Tx(r.Context(), func(q pgdb.DBTX) error {
		_, found, err := findRule(r.Context(), q, sess.UserID, kind, ruleID)
		if found != nil {
			rule = *found
		}
		return err
	})
	if err != nil {
		return err
	}
	return mxhttp.JSON(w, http.StatusOK, renderRule(kind, rule))
}

// validActions checks a rule's actions: known strings or set_tweak objects.
func validActions(actions []json.RawMessage) error {
	for _, a := range actions {
		var str string
		if json.Unmarshal(a, &str) == nil {
			switch str {
			case "notify", "dont_notify", "coalesce":
				continue
			}
			return mxhttp.InvalidParam("unknown push rule action %q", truncate(str, 40))
		}
		var t struct {
			SetTweak string `json:"set_tweak"`
		}
		if json.Unmarshal(a, &t) != nil || t.SetTweak == "" {
			return mxhttp.InvalidParam("push rule actions must be strings or set_tweak objects")
		}
	}
	return nil
}

// savePushRules publishes the user's rules as m.push_rules account data, for /sync.
func (s *Server) savePushRules(ctx context.Context, q pgdb.DBTX, userID string) error {
	rs, err := push.LoadRuleset(ctx, q, userID)
	if err != nil {
		return err
	}
	b, err := json.Marshal(map[string]any{"global": renderRuleset(rs)})
	if err != nil {
		return err
	}
	_, err = storage.PutAccountData(ctx, q, userID, "", "m.push_rules", b)
	return err
}

func (s *Server) putPushRule(w http.ResponseWriter, r *http.Request, sess *Session) error {
	kind, ruleID, err := pushRulePath(r)
	if err != nil {
		return err
	}
	if push.IsDefaultID(ruleID) {
		return mxhttp.InvalidParam("rule IDs starting with '.' are reserved for server-default rules")
	}
	var body struct {
		Actions    *[]json.RawMessage `json:"actions"`
		Conditions []push.Condition   `json:"conditions"`
		Pattern    *string            `json:"pattern"`
	}
	if err := mxhttp.DecodeJSON(r, &body); err != nil {
		return err
	}
	if body.Actions == nil {
		return mxhttp.MissingParam("actions is required")
	}
	if err := validActions(*body.Actions); err != nil {
		return err
	}
	stored := push.StoredRule{Actions: *body.Actions}
	switch kind {
	case push.KindContent:
		if body.Pattern == nil {
			return mxhttp.MissingParam("content rules need a pattern")
		}
		stored.Pattern = body.Pattern
	case push.KindOverride, push.KindUnderride:
		stored.Conditions = body.Conditions
		if stored.Conditions == nil {
			stored.Conditions = []push.Condition{}
		}
		for _, c := range stored.Conditions {
			if c.Kind == "" {
				return mxhttp.InvalidParam("every condition needs a kind")
			}
		}
	}
	b, err := json.Marshal(stored)
	if err != nil {
		return err
	}
	before, after := r.URL.Query().Get("before"), r.URL.Query().Get("after")
	ctx := r.Context()
	err = sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		rows, err := storage.PushRules(ctx, q, []string{sess.UserID})
		if err != nil {
			return err
		}
		var others []storage.PushRuleRow // the kind's other rules, in order
		var existing *storage.PushRuleRow
		for i := range rows {
			switch {
			case rows[i].Kind != kind:
			case rows[i].RuleID == ruleID:
				existing = &rows[i]
			default:
				others = append(others, rows[i])
			}
		}
		pos, err := rulePosition(others, existing, before, after)
		if err != nil {
			return err
		}
		err = storage.PutPushRule(ctx, q, storage.PushRuleRow{UserID: sess.UserID, Kind: kind, RuleID: ruleID, Rule: b, Position: pos})
		if err != nil {
			return err
		}
		return s.savePushRules(ctx, q, sess.UserID)
	})
	if err != nil {
		return err
	}
	s.notifier.Notify(sess.T.TenantID)
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

// rulePosition places a rule among the kind's other user rules: before or after the named
// one, where it was, or first.
func rulePosition(others []storage.PushRuleRow, existing *storage.PushRuleRow, before, after string) (float64, error) {
	anchor := before
	if anchor == "" {
		anchor = after
	}
	if anchor == "" {
		if existing != nil {
			return existing.Position, nil
		}
		if len(others) == 0 {
			return 0, nil
		}
		return others[0].Position - 1, nil
	}
	if push.IsDefaultID(anchor) {
		return 0, mxhttp.InvalidParam("rules cannot be placed relative to server-default rules")
	}
	for i, o := range others {
		if o.RuleID != anchor {
			continue
		}
		if before != "" {
			if i == 0 {
				return o.Position - 1, nil
			}
			return (others[i-1].Position + o.Position) / 2, nil
		}
		if i == len(others)-1 {
			return o.Position + 1, nil
		}
		return (o.Position + others[i+1].Position) / 2, nil
	}
	return 0, mxhttp.NotFound("push rule %q to place against not found", truncate(anchor, 80))
}

func (s *Server) deletePushRule(w http.ResponseWriter, r *http.Request, sess *Session) error {
	kind, ruleID, err := pushRulePath(r)
	if err != nil {
		return err
	}
	if push.IsDefaultID(ruleID) {
		return mxhttp.InvalidParam("server-default rules cannot be deleted")
	}
	ctx := r.Context()
	err = sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
		if err := storage.DeletePushRule(ctx, q, sess.UserID, kind, ruleID); err != nil {
			return err
		}
		return s.savePushRules(ctx, q, sess.UserID)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("push rule not found")
	}
	if err != nil {
		return err
	}
	s.notifier.Notify(sess.T.TenantID)
	return mxhttp.JSON(w, http.StatusOK, struct{}{})
}

// pushRuleAttr serves GET and PUT of a rule's enabled flag or actions.
func (s *Server) pushRuleAttr(attr string, put bool) authedHandler {
	return func(w http.ResponseWriter, r *http.Request, sess *Session) error {
		kind, ruleID, err := pushRulePath(r)
		if err != nil {
			return err
		}
		ctx := r.Context()
		if !put {
			var rule push.Rule
			err := sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
				_, found, err := findRule(ctx, q, sess.UserID, kind, ruleID)
				if found != nil {
					rule = *found
				}
				return err
			})
			if err != nil {
				return err
			}
			if attr == "enabled" {
				return mxhttp.JSON(w, http.StatusOK, map[string]any{"enabled": rule.Enabled})
			}
			return mxhttp.JSON(w, http.StatusOK, map[string]any{"actions": rule.Actions})
		}
		var body struct {
			Enabled *bool              `json:"enabled"`
			Actions *[]json.RawMessage `json:"actions"`
		}
		if err := mxhttp.DecodeJSON(r, &body); err != nil {
			return err
		}
		if attr == "enabled" && body.Enabled == nil {
			return mxhttp.MissingParam("enabled is required")
		}
		if attr == "actions" {
			if body.Actions == nil {
				return mxhttp.MissingParam("actions is required")
			}
			if err := validActions(*body.Actions); err != nil {
				return err
			}
		}
		err = sess.T.Store.Tx(ctx, func(q pgdb.DBTX) error {
			_, rule, err := findRule(ctx, q, sess.UserID, kind, ruleID)
			if err != nil {
				return err
			}
			switch {
			case attr == "enabled":
				err = storage.SetPushRuleEnabled(ctx, q, sess.UserID, kind, ruleID, *body.Enabled)
			case rule.Default:
				var b []byte
				if b, err = json.Marshal(*body.Actions); err == nil {
					err = storage.SetPushRuleActions(ctx, q, sess.UserID, kind, ruleID, b)
				}
			default:
				err = setUserRuleActions(ctx, q, sess.UserID, kind, ruleID, *body.Actions)
			}
			if err != nil {
				return err
			}
			return s.savePushRules(ctx, q, sess.UserID)
		})
		if err != nil {
			return err
		}
		s.notifier.Notify(sess.T.TenantID)
		return mxhttp.JSON(w, http.StatusOK, struct{}{})
	}
}

func setUserRuleActions(ctx context.Context, q pgdb.DBTX, userID, kind, ruleID string, actions []json.RawMessage) error {
	rows, err := storage.PushRules(ctx, q, []string{userID})
	if err != nil {
		return err
	}
	for _, row := range rows {
		if row.Kind != kind || row.RuleID != ruleID {
			continue
		}
		var sr push.StoredRule
		if err := json.Unmarshal(row.Rule, &sr); err != nil {
			return err
		}
		sr.Actions = actions
		if row.Rule, err = json.Marshal(sr); err != nil {
			return err
		}
		return storage.PutPushRule(ctx, q, row)
	}
	return mxhttp.NotFound("push rule not found")
}
