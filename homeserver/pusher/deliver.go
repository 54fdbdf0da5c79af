package pusher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/pgdb"
	"github.com/atoll-matrix/atoll/pushgateway/safedial"
)

// deliverTenant delivers the pending notifications of every HTTP pusher of a tenant and
// returns when to look again (zero: when woken).
func (w *Worker) deliverTenant(ctx context.Context, store *storage.Store) (time.Time, error) {
	var pushers []storage.Pusher
	err := store.Tx(ctx, func(q pgdb.DBTX) error {
		var err error
		pushers, err = storage.PushersWithPending(ctx, q, "http")
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("list pushers: %w", err)
	}
	var next time.Time
	var errs []error
	for _, p := range pushers {
		if ctx.Err() != nil {
			return next, ctx.Err()
		}
		at, err := w.deliverPusher(ctx, store, p)
		if err != nil {
			errs = append(errs, err)
		}
		if !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next, errors.Join(errs...)
}

// outcome of one request to a gateway.
type outcome int

const (
	delivered outcome = iota
	rejected          // delivered, and the gateway rejected the pushkey
	transient         // retry later
	permanent         // drop this notification
)

// deliverPusher sends a pusher's notifications after its position, oldest first, until none
// are left, the pusher is removed, or a delivery fails (then it returns when to retry).
func (w *Worker) deliverPusher(ctx context.Context, store *storage.Store, p storage.Pusher) (time.Time, error) {
	now := w.now()
	if p.NextAttemptTS > now.UnixMilli() {
		return time.UnixMilli(p.NextAttemptTS), nil
	}
	var data pusherData
	_ = json.Unmarshal(p.Data, &data)
	urlErr := w.CheckURL(data.URL)
	for {
		var batch []notificationJob
		err := store.Tx(ctx, func(q pgdb.DBTX) error {
			actions, err := storage.PendingPushActions(ctx, q, p.UserID, p.LastStreamPos, w.cfg.BatchSize)
			if err != nil {
				return err
			}
			if len(actions) == 0 {
				return nil
			}
			unread, err := storage.UnreadNotificationCount(ctx, q, p.UserID)
			if err != nil {
				return err
			}
			for _, a := range actions {
				job, err := buildJob(ctx, q, p, a, unread)
				if err != nil {
					return err
				}
				batch = append(batch, job)
			}
			return nil
		})
		if err != nil {
			return time.Time{}, fmt.Errorf("read notifications of pusher: %w", err)
		}
		if len(batch) == 0 {
			return time.Time{}, nil
		}
		for _, job := range batch {
			out := permanent
			if urlErr == nil {
				out = w.send(ctx, data, p, job)
			} else {
				w.log.Warn("push gateway URL not allowed; notification dropped", "user_id", p.UserID, "app_id", p.AppID)
			}
			w.metrics.sent.WithLabelValues(out.String()).Inc()
			from := p.LastStreamPos
			switch out {
			case rejected:
				err := store.Tx(ctx, func(q pgdb.DBTX) error {
					return storage.DeletePusher(ctx, q, p.UserID, p.AppID, p.Pushkey)
				})
				if err != nil {
					return time.Time{}, fmt.Errorf("remove rejected pusher: %w", err)
				}
				w.log.Info("pusher removed: pushkey rejected by gateway", "user_id", p.UserID, "app_id", p.AppID)
				return time.Time{}, nil
			case transient:
				p.Failures++
				if job.ts != 0 && w.now().Sub(time.UnixMilli(job.ts)) > w.cfg.GiveUpAfter {
					w.log.Warn("push notification dropped after repeated failures", "user_id", p.UserID, "app_id", p.AppID,
						"failures", p.Failures)
					p.LastStreamPos, p.Failures, p.NextAttemptTS = job.pos, 0, 0
					if ok, err := w.saveState(ctx, store, p, from, 0); err != nil || !ok {
						return time.Time{}, err
					}
					continue
				}
				at := w.now().Add(w.backoff(p.Failures))
				p.NextAttemptTS = at.UnixMilli()
				if _, err := w.saveState(ctx, store, p, from, 0); err != nil {
					return time.Time{}, err
				}
				return at, nil
			default: // delivered or permanent: move past it
				p.LastStreamPos, p.Failures, p.NextAttemptTS = job.pos, 0, 0
				var ts int64
				if out == delivered {
					ts = w.now().UnixMilli()
				}
				if ok, err := w.saveState(ctx, store, p, from, ts); err != nil || !ok {
					return time.Time{}, err
				}
			}
		}
	}
}

// saveState records p's delivery state; false means another worker moved the pusher on (or
// it was removed), so this one stops.
func (w *Worker) saveState(ctx context.Context, store *storage.Store, p storage.Pusher, from, successTS int64) (bool, error) {
	var ok bool
	err := store.Tx(ctx, func(q pgdb.DBTX) error {
		var err error
		ok, err = storage.SetPusherState(ctx, q, p, from, successTS)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("save pusher state: %w", err)
	}
	return ok, nil
}

func (w *Worker) backoff(failures int) time.Duration {
	d := w.cfg.MinBackoff
	for i := 1; i < failures && d < w.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, w.cfg.MaxBackoff)
}

func (o outcome) String() string {
	switch o {
	case delivered:
		return "delivered"
	case rejected:
		return "rejected"
	case transient:
		return "retry"
	}
	return "dropped"
}

// pusherData is the data of an HTTP pusher.
type pusherData struct {
	URL    string `json:"url"`
	Format string `json:"format"`
}

// Push Gateway API request body.
type notifyRequest struct {
	Notification notification `json:"notification"`
}

type notification struct {
	EventID           string          `json:"event_id,omitempty"`
	RoomID            string          `json:"room_id,omitempty"`
	Type              string          `json:"type,omitempty"`
	Sender            string          `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	RoomAlias         string          `json:"room_alias,omitempty"`
	UserIsTarget      bool            `json:"user_is_target,omitempty"`
	Prio              string          `json:"prio"`
	Content           json.RawMessage `json:"content,omitempty"`
	Counts            counts          `json:"counts"`
	Devices           []device        `json:"devices"`
}

type counts struct {
	Unread int `json:"unread"`
}

type device struct {
	AppID     string         `json:"app_id"`
	Pushkey   string         `json:"pushkey"`
	PushkeyTS int64          `json:"pushkey_ts,omitempty"`
	Data      map[string]any `json:"data,omitempty"`
	Tweaks    map[string]any `json:"tweaks,omitempty"`
}

type notificationJob struct {
	pos int64
	ts  int64
	n   notification
}

// buildJob assembles the notification of one verdict for pusher p.
func buildJob(ctx context.Context, q pgdb.DBTX, p storage.Pusher, a storage.PushAction, unread int) (notificationJob, error) {
	job := notificationJob{pos: a.StreamPos}
	var data map[string]any
	_ = json.Unmarshal(p.Data, &data)
	delete(data, "url")
	tweaks := map[string]any{}
	var actions []json.RawMessage
	_ = json.Unmarshal(a.Actions, &actions)
	for _, act := range actions {
		var t struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(act, &t) != nil || t.SetTweak == "" {
			continue
		}
		var v any = true
		if len(t.Value) > 0 {
			_ = json.Unmarshal(t.Value, &v)
		}
		tweaks[t.SetTweak] = v
	}
	ev, err := storage.EventByID(ctx, q, a.EventID)
	if errors.Is(err, storage.ErrNotFound) {
		return job, nil // gone (purged): send the bare notification
	}
	if err != nil {
		return job, fmt.Errorf("load event %s: %w", a.EventID, err)
	}
	job.ts = ev.OriginServerTS
	prio := "low"
	if ev.Type == "m.room.encrypted" || tweaks["highlight"] == true || tweaks["sound"] != nil {
		prio = "high"
	}
	n := notification{
		EventID: a.EventID, RoomID: a.RoomID, Prio: prio, Counts: counts{Unread: unread},
		Devices: []device{{AppID: p.AppID, Pushkey: p.Pushkey, PushkeyTS: p.CreatedTS / 1000, Data: data, Tweaks: tweaks}},
	}
	if f, _ := data["format"].(string); f == "event_id_only" {
		job.n = n
		return job, nil
	}
	var pdu struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(ev.JSON, &pdu)
	n.Type, n.Sender, n.Content = ev.Type, ev.Sender, pdu.Content
	n.UserIsTarget = ev.StateKey != nil && *ev.StateKey == p.UserID
	state, err := storage.CurrentStateEvents(ctx, q, a.RoomID, []storage.StateKeyTuple{
		{Type: spec.MRoomName}, {Type: spec.MRoomCanonicalAlias}, {Type: spec.MRoomMember, StateKey: ev.Sender}})
	if err != nil {
		return job, fmt.Errorf("load room state: %w", err)
	}
	for _, s := range state {
		var c struct {
			Content struct {
				Name        string `json:"name"`
				Alias       string `json:"alias"`
				DisplayName string `json:"displayname"`
			} `json:"content"`
		}
		_ = json.Unmarshal(s.JSON, &c)
		switch s.Type {
		case spec.MRoomName:
			n.RoomName = c.Content.Name
		case spec.MRoomCanonicalAlias:
			n.RoomAlias = c.Content.Alias
		case spec.MRoomMember:
			n.SenderDisplayName = c.Content.DisplayName
		}
	}
	job.n = n
	return job, nil
}

// send POSTs one notification to the pusher's gateway URL, and nowhere else: the client
// follows no redirects.
func (w *Worker) send(ctx context.Context, data pusherData, p storage.Pusher, job notificationJob) outcome {
	body, err := json.Marshal(notifyRequest{Notification: job.n})
	if err != nil {
		return permanent
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, data.URL, bytes.NewReader(body))
	if err != nil {
		return permanent
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		if safedial.IsBlocked(err) {
			w.log.Warn("push gateway address refused", "user_id", p.UserID, "app_id", p.AppID, "error", safedial.StripURL(err))
			return permanent
		}
		w.log.Warn("push gateway unreachable", "user_id", p.UserID, "app_id", p.AppID, "error", safedial.StripURL(err))
		return transient
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		var r struct {
			Rejected []string `json:"rejected"`
		}
		_ = json.Unmarshal(b, &r)
		if slices.Contains(r.Rejected, p.Pushkey) {
			return rejected
		}
		return delivered
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		w.log.Warn("push gateway failed", "user_id", p.UserID, "app_id", p.AppID, "status", resp.StatusCode)
		return transient
	default:
		w.log.Warn("push gateway refused notification", "user_id", p.UserID, "app_id", p.AppID, "status", resp.StatusCode)
		return permanent
	}
}
