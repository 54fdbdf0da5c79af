package storage

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Push rules.

// PushRuleRow is a rule a user added: its JSON (actions, conditions, pattern) and its
// position within its kind, lowest first.
type PushRuleRow struct {
	UserID   string
	Kind     string
	RuleID   string
	Rule     json.RawMessage
	Position float64
}

// PushRuleOverrideRow changes a rule's enabled flag or actions; nil fields are unchanged.
type PushRuleOverrideRow struct {
	UserID  string
	Kind    string
	RuleID  string
	Enabled *bool
	Actions json.RawMessage
}

// PushRules returns the rules the users added, by kind and position.
func PushRules(ctx context.Context, q pgdb.DBTX, userIDs []string) ([]PushRuleRow, error) {
	rows, err := q.Query(ctx, `SELECT user_id, kind, rule_id, rule, position FROM push_rules
		WHERE user_id = ANY($1) ORDER BY user_id, kind, position, rule_id`, userIDs)
	if err != nil {
		return nil, fmt.Errorf("select push rules: %w", err)
	}
	defer rows.Close()
	var out []PushRuleRow
	for rows.Next() {
		var r PushRuleRow
		if err := rows.Scan(&r.UserID, &r.Kind, &r.RuleID, &r.Rule, &r.Position); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// PushRuleOverrides returns the users' overrides.
func PushRuleOverrides(ctx context.Context, q pgdb.DBTX, userIDs []string) ([]PushRuleOverrideRow, error) {
	rows, err := q.Query(ctx, `SELECT user_id, kind, rule_id, enabled, actions FROM push_rule_overrides
		WHERE user_id = ANY($1)`, userIDs)
	if err != nil {
		return nil, fmt.Errorf("select push rule overrides: %w", err)
	}
	defer rows.Close()
	var out []PushRuleOverrideRow
	for rows.Next() {
		var r PushRuleOverrideRow
		var actions []byte
		if err := rows.Scan(&r.UserID, &r.Kind, &r.RuleID, &r.Enabled, &actions); err != nil {
			return nil, err
		}
		r.Actions = actions
		out = append(out, r)
	}
	return out, rows.Err()
}

// PutPushRule inserts or replaces a user's rule.
func PutPushRule(ctx context.Context, q pgdb.DBTX, r PushRuleRow) error {
	_, err := q.Exec(ctx, `INSERT INTO push_rules (user_id, kind, rule_id, rule, position) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET rule = $4, position = $5`,
		r.UserID, r.Kind, r.RuleID, []byte(r.Rule), r.Position)
	if err != nil {
		return fmt.Errorf("put push rule %s/%s: %w", r.Kind, r.RuleID, err)
	}
	return nil
}

// DeletePushRule removes a user's rule and its override; ErrNotFound if there is none.
func DeletePushRule(ctx context.Context, q pgdb.DBTX, userID, kind, ruleID string) error {
	tag, err := q.Exec(ctx, `DELETE FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3`, userID, kind, ruleID)
	if err != nil {
		return fmt.Errorf("delete push rule %s/%s: %w", kind, ruleID, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	_, err = q.Exec(ctx, `DELETE FROM push_rule_overrides WHERE user_id = $1 AND kind = $2 AND rule_id = $3`, userID, kind, ruleID)
	return err
}

// SetPushRuleEnabled records a rule's enabled flag.
func SetPushRuleEnabled(ctx context.Context, q pgdb.DBTX, userID, kind, ruleID string, enabled bool) error {
	_, err := q.Exec(ctx, `INSERT INTO push_rule_overrides (user_id, kind, rule_id, enabled) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET enabled = $4`, userID, kind, ruleID, enabled)
	if err != nil {
		return fmt.Errorf("set push rule enabled %s/%s: %w", kind, ruleID, err)
	}
	return nil
}

// SetPushRuleActions records new actions for a server-default rule.
func SetPushRuleActions(ctx context.Context, q pgdb.DBTX, userID, kind, ruleID string, actions json.RawMessage) error {
	_, err := q.Exec(ctx, `INSERT INTO push_rule_overrides (user_id, kind, rule_id, actions) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET actions = $4`, userID, kind, ruleID, []byte(actions))
	if err != nil {
		return fmt.Errorf("set push rule actions %s/%s: %w", kind, ruleID, err)
	}
	return nil
}

// Pushers.

// Pusher is a registered pusher with its delivery state.
type Pusher struct {
	UserID            string
	AppID             string
	Pushkey           string
	Kind              string
	AppDisplayName    string
	DeviceDisplayName string
	ProfileTag        string
	Lang              string
	Data              json.RawMessage
	DeviceID          string
	CreatedTS         int64
	// Delivery state.
	LastStreamPos int64
	Failures      int
	NextAttemptTS int64
}

const pusherColumns = `user_id, app_id, pushkey, kind, app_display_name, device_display_name, coalesce(profile_tag, ''),
	lang, data, coalesce(device_id, ''), created_ts, last_stream_pos, failures, next_attempt_ts`

func collectPushers(rows pgx.Rows, err error) ([]Pusher, error) {
	if err != nil {
		return nil, fmt.Errorf("select pushers: %w", err)
	}
	defer rows.Close()
	var out []Pusher
	for rows.Next() {
		var p Pusher
		var data []byte
		if err := rows.Scan(&p.UserID, &p.AppID, &p.Pushkey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag,
			&p.Lang, &data, &p.DeviceID, &p.CreatedTS, &p.LastStreamPos, &p.Failures, &p.NextAttemptTS); err != nil {
			return nil, err
		}
		p.Data = data
		out = append(out, p)
	}
	return out, rows.Err()
}

// UpsertPusher creates or updates a pusher. A new pusher starts at the current stream
// position: it delivers only notifications for events after its creation.
func UpsertPusher(ctx context.Context, q pgdb.DBTX, p Pusher) error {
	_, err := q.Exec(ctx, `INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name, device_display_name,
			profile_tag, lang, data, device_id, created_ts, last_stream_pos)
		VALUES ($1, $2, $3, $4, $5, $6, nullif($7, ''), $8, $9, nullif($10, ''), $11,
			(SELECT pos FROM stream_head))
		ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = $4, app_display_name = $5, device_display_name = $6,
			profile_tag = nullif($7, ''), lang = $8, data = $9, device_id = nullif($10, ''), failures = 0, next_attempt_ts = 0`,
		p.UserID, p.AppID, p.Pushkey, p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang, []byte(p.Data),
		p.DeviceID, p.CreatedTS)
	if err != nil {
		return fmt.Errorf("upsert pusher: %w", err)
	}
	return nil
}

// DeletePusher removes one of a user's pushers.
func DeletePusher(ctx context.Context, q pgdb.DBTX, userID, appID, pushkey string) error {
	_, err := q.Exec(ctx, `DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, userID, appID, pushkey)
	if err != nil {
		return fmt.Errorf("delete pusher: %w", err)
	}
	return nil
}

// DeletePushersOfOthers removes the pushers with app ID and pushkey that belong to users
// other than userID.
func DeletePushersOfOthers(ctx context.Context, q pgdb.DBTX, appID, pushkey, userID string) error {
	_, err := q.Exec(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3`, appID, pushkey, userID)
	if err != nil {
		return fmt.Errorf("delete pushers of others: %w", err)
	}
	return nil
}

// UserPushers lists a user's pushers.
func UserPushers(ctx context.Context, q pgdb.DBTX, userID string) ([]Pusher, error) {
	return collectPushers(q.Query(ctx, `SELECT `+pusherColumns+` FROM pushers WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey`, userID))
}

// PushersOfKind lists every pusher of a kind in the tenant.
func PushersOfKind(ctx context.Context, q pgdb.DBTX, kind string) ([]Pusher, error) {
	return collectPushers(q.Query(ctx, `SELECT `+pusherColumns+` FROM pushers WHERE kind = $1 ORDER BY user_id, app_id, pushkey`, kind))
}

// PushersWithPending lists the pushers of a kind with notifying verdicts after their
// delivery position.
func PushersWithPending(ctx context.Context, q pgdb.DBTX, kind string) ([]Pusher, error) {
	return collectPushers(q.Query(ctx, `SELECT `+pusherColumns+` FROM pushers p WHERE kind = $1 AND EXISTS (
		SELECT 1 FROM event_push_actions a WHERE a.user_id = p.user_id AND a.notify AND a.stream_pos > p.last_stream_pos)
		ORDER BY user_id, app_id, pushkey`, kind))
}

// SetPusherState records delivery progress if the pusher's position is still from, so two
// workers never move it backwards. It reports whether the row was updated.
func SetPusherState(ctx context.Context, q pgdb.DBTX, p Pusher, from int64, successTS int64) (bool, error) {
	var ts *int64
	if successTS != 0 {
		ts = &successTS
	}
	tag, err := q.Exec(ctx, `UPDATE pushers SET last_stream_pos = $4, failures = $5, next_attempt_ts = $6,
			last_success_ts = coalesce($7, last_success_ts)
		WHERE user_id = $1 AND app_id = $2 AND pushkey = $3 AND last_stream_pos = $8`,
		p.UserID, p.AppID, p.Pushkey, p.LastStreamPos, p.Failures, p.NextAttemptTS, ts, from)
	if err != nil {
		return false, fmt.Errorf("set pusher state: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// Push actions.

// PushAction is a user's verdict on an event.
type PushAction struct {
	UserID    string
	RoomID    string
	EventID   string
	StreamPos int64
	ThreadID  string
	Notify    bool
	Highlight bool
	Actions   json.RawMessage
}

// InsertPushActions stores verdicts; a verdict already stored for (user, event) is kept.
func InsertPushActions(ctx context.Context, q pgdb.DBTX, actions []PushAction) error {
	for _, a := range actions {
		thread := a.ThreadID
		if thread == "" {
			thread = "main"
		}
		_, err := q.Exec(ctx, `INSERT INTO event_push_actions (user_id, room_id, event_id, stream_pos, thread_id, notify, highlight, actions)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (user_id, event_id) DO NOTHING`,
			a.UserID, a.RoomID, a.EventID, a.StreamPos, thread, a.Notify, a.Highlight, []byte(a.Actions))
		if err != nil {
			return fmt.Errorf("insert push action %s for %s: %w", a.EventID, a.UserID, err)
		}
	}
	return nil
}

// PendingPushActions returns up to limit of the user's notifying verdicts after pos, oldest
// first.
func PendingPushActions(ctx context.Context, q pgdb.DBTX, userID string, after int64, limit int) ([]PushAction, error) {
	rows, err := q.Query(ctx, `SELECT user_id, room_id, event_id, stream_pos, thread_id, notify, highlight, actions
		FROM event_push_actions WHERE user_id = $1 AND notify AND stream_pos > $2 ORDER BY stream_pos LIMIT $3`,
		userID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("select pending push actions: %w", err)
	}
	defer rows.Close()
	var out []PushAction
	for rows.Next() {
		var a PushAction
		var actions []byte
		if err := rows.Scan(&a.UserID, &a.RoomID, &a.EventID, &a.StreamPos, &a.ThreadID, &a.Notify, &a.Highlight, &actions); err != nil {
			return nil, err
		}
		a.Actions = actions
		out = append(out, a)
	}
	return out, rows.Err()
}

// readPosSQL is the stream position of the user's ($1) main-timeline read receipt in room r.
const readPosSQL = `coalesce((SELECT max(e.stream_pos) FROM receipts rc JOIN events e ON e.event_id = rc.event_id
	WHERE rc.room_id = a.room_id AND rc.user_id = $1 AND rc.receipt_type IN ('m.read', 'm.read.private')
	AND rc.thread_id IN ('', 'main')), 0)`

// UnreadNotificationCount counts the user's notifying verdicts after their read receipts,
// over all rooms.
func UnreadNotificationCount(ctx context.Context, q pgdb.DBTX, userID string) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT count(*) FROM event_push_actions a WHERE a.user_id = $1 AND a.notify
		AND a.stream_pos > `+readPosSQL, userID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count unread notifications: %w", err)
	}
	return n, nil
}

// Notification is a verdict with its event, for GET /notifications.
type Notification struct {
	PushAction
	Read  bool
	Event EventRow
}

// Notifications returns up to limit of the user's notifying (or, with onlyHighlight,
// highlighting) verdicts before stream position before (0: newest), newest first.
func Notifications(ctx context.Context, q pgdb.DBTX, userID string, before int64, limit int, onlyHighlight bool) ([]Notification, error) {
	rows, err := q.Query(ctx, `SELECT a.room_id, a.event_id, a.stream_pos, a.thread_id, a.notify, a.highlight, a.actions,
			a.stream_pos <= `+readPosSQL+`
		FROM event_push_actions a
		WHERE a.user_id = $1 AND ($2::bigint = 0 OR a.stream_pos < $2::bigint) AND (a.notify OR a.highlight) AND (NOT $4 OR a.highlight)
		ORDER BY a.stream_pos DESC LIMIT $3`, userID, before, limit, onlyHighlight)
	if err != nil {
		return nil, fmt.Errorf("select notifications: %w", err)
	}
	defer rows.Close()
	var out []Notification
	ids := []string{}
	for rows.Next() {
		n := Notification{PushAction: PushAction{UserID: userID}}
		var actions []byte
		if err := rows.Scan(&n.RoomID, &n.EventID, &n.StreamPos, &n.ThreadID, &n.Notify, &n.Highlight, &actions, &n.Read); err != nil {
			return nil, err
		}
		n.Actions = actions
		out = append(out, n)
		ids = append(ids, n.EventID)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	events, err := EventsByID(ctx, q, ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]EventRow, len(events))
	for _, e := range events {
		byID[e.EventID] = e
	}
	kept := out[:0]
	for _, n := range out {
		if e, ok := byID[n.EventID]; ok {
			n.Event = e
			kept = append(kept, n)
		}
	}
	return kept, nil
}

// UsersIgnoring returns those of userIDs whose m.ignored_user_list names sender.
func UsersIgnoring(ctx context.Context, q pgdb.DBTX, userIDs []string, sender string) (map[string]bool, error) {
	rows, err := q.Query(ctx, `SELECT user_id FROM account_data WHERE user_id = ANY($1) AND room_id = ''
		AND type = 'm.ignored_user_list' AND jsonb_typeof(content->'ignored_users') = 'object' AND content->'ignored_users' ? $2`,
		userIDs, sender)
	if err != nil {
		return nil, fmt.Errorf("select ignoring users: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, err
}
