// Package rooms creates, authorises and persists a tenant's local events: the only caller of
// gomatrixserverlib's event builder. Every event passes the room version's auth rules against
// the room's current state before it is stored.
package rooms

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Host is the tenant an operation runs in: its identity and its store.
type Host struct {
	TenantID   string
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	Key        ed25519.PrivateKey
	Store      *storage.Store
}

// Errors the API layer maps to Matrix errors.
var (
	ErrRoomNotFound       = errors.New("room not found")
	ErrEventNotFound      = errors.New("event not found")
	ErrUnsupportedVersion = errors.New("unsupported room version")
)

// ForbiddenError is an event the auth rules (or a server policy) reject.
type ForbiddenError struct{ Reason string }

func (e *ForbiddenError) Error() string { return "forbidden: " + e.Reason }

// BadEventError is an event that cannot be built: bad content or size.
type BadEventError struct{ Reason string }

func (e *BadEventError) Error() string { return "bad event: " + e.Reason }

// Persisted reports an event that was stored, for wake-ups.
type Persisted struct {
	TenantID  string
	RoomID    string
	EventID   string
	StreamPos int64
	Event     gomatrixserverlib.PDU
	// Remote is set for events received over federation: they are not sent out again.
	Remote bool
}

// Engine serialises writers per room and persists events.
type Engine struct {
	log     *slog.Logger
	onEvent func(Persisted)
	// onStateRes observes state resolution durations (federation metrics).
	onStateRes StateResolutionObserver
	inTx       InTx
	metrics    *metrics
	mu         sync.Mutex
	locks      map[string]*roomLock
	now        func() time.Time
}

type roomLock struct {
	mu   sync.Mutex
	refs int
}

type metrics struct {
	persisted *prometheus.CounterVec
	rejected  prometheus.Counter
	duration  prometheus.Histogram
}

// New returns an engine. onEvent is called after each event commits.
func New(log *slog.Logger, reg prometheus.Registerer, onEvent func(Persisted)) *Engine {
	f := promauto.With(reg)
	return &Engine{
		log:     log,
		onEvent: onEvent,
		locks:   map[string]*roomLock{},
		now:     time.Now,
		metrics: &metrics{
			persisted: f.NewCounterVec(prometheus.CounterOpts{
				Name: "atoll_homeserver_events_persisted_total",
				Help: "Events persisted, by origin (local or federation).",
			}, []string{"origin"}),
			rejected: f.NewCounter(prometheus.CounterOpts{
				Name: "atoll_homeserver_events_rejected_total",
				Help: "Local events refused by the auth rules.",
			}),
			duration: f.NewHistogram(prometheus.HistogramOpts{
				Name:    "atoll_homeserver_event_persist_duration_seconds",
				Help:    "Time to build, authorise and persist one local event.",
				Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
			}),
		},
	}
}

func (e *Engine) lock(key string) func() {
	e.mu.Lock()
	l := e.locks[key]
	if l == nil {
		l = &roomLock{}
		e.locks[key] = l
	}
	l.refs++
	e.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		e.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(e.locks, key)
		}
		e.mu.Unlock()
	}
}

// Request is a local event to send.
type Request struct {
	RoomID   string
	Sender   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	Redacts  string
	// TxnDevice and TxnID make a client's retry return the first event instead of a second.
	TxnDevice string
	TxnID     string
}

// UserIDForSender maps sender IDs to user IDs; Atoll's room versions use user IDs as senders.
func UserIDForSender(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

// Send builds, authorises and persists one event, returning its ID. A repeated transaction
// ID returns the original event.
func (e *Engine) Send(ctx context.Context, h *Host, req Request) (string, error) {
	start := time.Now()
	unlock := e.lock(h.TenantID + "|" + req.RoomID)
	defer unlock()
	var persisted []Persisted
	var eventID string
	err := h.Store.Tx(ctx, func(q pgdb.DBTX) error {
		persisted = persisted[:0]
		if req.TxnID != "" {
			id, err := storage.TxnEventID(ctx, q, req.RoomID, req.Sender, req.TxnDevice, req.TxnID)
			if err == nil {
				eventID = id
				return nil
			}
			if !errors.Is(err, storage.ErrNotFound) {
				return err
			}
		}
		room, err := storage.RoomForUpdate(ctx, q, req.RoomID)
		if errors.Is(err, storage.ErrNotFound) {
			return ErrRoomNotFound
		}
		if err != nil {
			return fmt.Errorf("lock room %s: %w", req.RoomID, err)
		}
		w := &writer{engine: e, host: h, q: q, room: room}
		if err := w.load(ctx); err != nil {
			return err
		}
		p, err := w.send(ctx, req)
		if err != nil {
			return err
		}
		eventID = p.EventID
		persisted = append(persisted, p)
		return w.finish(ctx)
	})
	if err != nil {
		var fe *ForbiddenError
		if errors.As(err, &fe) {
			e.metrics.rejected.Inc()
		}
		return "", err
	}
	e.metrics.duration.Observe(time.Since(start).Seconds())
	e.publish(persisted)
	return eventID, nil
}

func (e *Engine) publish(ps []Persisted) {
	for _, p := range ps {
		e.metrics.persisted.WithLabelValues("local").Inc()
		if e.onEvent != nil {
			e.onEvent(p)
		}
	}
}

// writer holds one room's head and current state while a transaction adds events to it.
type writer struct {
	engine  *Engine
	host    *Host
	q       pgdb.DBTX
	room    storage.Room
	verImpl gomatrixserverlib.IRoomVersion
	// state is the current state, loaded lazily per tuple; missing means "no such state".
	state  map[storage.StateKeyTuple]gomatrixserverlib.PDU
	loaded bool
}

func (w *writer) load(ctx context.Context) error {
	v, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(w.room.Version))
	if err != nil {
		return fmt.Errorf("room %s: %w", w.room.RoomID, ErrUnsupportedVersion)
	}
	w.verImpl = v
	w.state = map[storage.StateKeyTuple]gomatrixserverlib.PDU{}
	if w.room.StateGroup == 0 {
		w.loaded = true
		return nil
	}
	rows, err := storage.CurrentStateEvents(ctx, w.q, w.room.RoomID, nil)
	if err != nil {
		return err
	}
	for _, r := range rows {
		ev, err := w.verImpl.NewEventFromTrustedJSON(r.JSON, r.RedactedBecause != "")
		if err != nil {
			return fmt.Errorf("load state event %s: %w", r.EventID, err)
		}
		w.state[storage.StateKeyTuple{Type: r.Type, StateKey: derefStr(r.StateKey)}] = ev
	}
	w.loaded = true
	return nil
}

func derefStr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// send builds one event on the room's head, checks it and persists it.
func (w *writer) send(ctx context.Context, req Request) (Persisted, error) {
	ev, err := w.build(req)
	if err != nil {
		return Persisted{}, err
	}
	if ev.Type() == spec.MRoomRedaction {
		if err := w.checkRedaction(ctx, ev); err != nil {
			return Persisted{}, err
		}
	}
	if ev.Type() == spec.MRoomCreate && ev.StateKeyEquals("") {
		w.room.RoomID = ev.RoomID().String()
	}
	return w.persist(ctx, ev, req)
}

// build makes one event on the room's head and checks it against the auth rules.
func (w *writer) build(req Request) (gomatrixserverlib.PDU, error) {
	content := req.Content
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: req.Sender,
		RoomID:   w.room.RoomID,
		Type:     req.Type,
		StateKey: req.StateKey,
		Redacts:  req.Redacts,
		Content:  spec.RawJSON(content),
		Depth:    w.room.Depth + 1,
		Version:  w.verImpl,
	}
	isCreate := req.Type == spec.MRoomCreate && req.StateKey != nil && *req.StateKey == ""
	if isCreate {
		proto.PrevEvents = []string{}
		proto.Depth = 1
		if w.verImpl.DomainlessRoomIDs() {
			proto.RoomID = ""
		}
	} else {
		proto.PrevEvents = w.room.Extremities
	}
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(&proto)
	if err != nil {
		return nil, &BadEventError{Reason: err.Error()}
	}
	var authState []gomatrixserverlib.PDU
	for _, t := range needed.Tuples() {
		if ev, ok := w.state[storage.StateKeyTuple{Type: t.EventType, StateKey: t.StateKey}]; ok {
			authState = append(authState, ev)
		}
	}
	authEvents, err := gomatrixserverlib.NewAuthEvents(authState)
	if err != nil {
		return nil, fmt.Errorf("auth events: %w", err)
	}
	builder := w.verImpl.NewEventBuilderFromProtoEvent(&proto)
	if !isCreate {
		if err := builder.AddAuthEvents(authEvents); err != nil {
			return nil, &ForbiddenError{Reason: err.Error()}
		}
	} else {
		builder.AuthEvents = []string{}
	}
	ev, err := builder.Build(w.engine.now(), w.host.ServerName, w.host.KeyID, w.host.Key)
	if err != nil {
		return nil, &BadEventError{Reason: err.Error()}
	}
	if len(ev.JSON()) > 65536 {
		return nil, &BadEventError{Reason: "event exceeds 65536 bytes"}
	}
	if err := gomatrixserverlib.Allowed(ev, authEvents, UserIDForSender); err != nil {
		return nil, &ForbiddenError{Reason: err.Error()}
	}
	return ev, nil
}

// checkRedaction applies the server's half of the redaction rules: the auth rules accept a
// redaction from the same server; only the redacted event's sender or someone with the redact
// power level may redact it.
func (w *writer) checkRedaction(ctx context.Context, ev gomatrixserverlib.PDU) error {
	target := redactsOf(ev)
	if target == "" {
		return &BadEventError{Reason: "redaction names no event"}
	}
	row, err := storage.EventByID(ctx, w.q, target)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && row.RoomID != w.room.RoomID) {
		return ErrEventNotFound
	}
	if err != nil {
		return err
	}
	if row.Sender == string(ev.SenderID()) {
		return nil
	}
	pl := w.powerLevels()
	if pl.UserLevel(ev.SenderID()) >= pl.Redact || w.isCreator(string(ev.SenderID())) {
		return nil
	}
	return &ForbiddenError{Reason: "you may only redact your own events"}
}

func redactsOf(ev gomatrixserverlib.PDU) string {
	if r := ev.Redacts(); r != "" {
		return r
	}
	var c struct {
		Redacts string `json:"redacts"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	return c.Redacts
}

func (w *writer) powerLevels() *gomatrixserverlib.PowerLevelContent {
	if ev, ok := w.state[storage.StateKeyTuple{Type: spec.MRoomPowerLevels}]; ok {
		if pl, err := ev.PowerLevels(); err == nil {
			return pl
		}
	}
	var pl gomatrixserverlib.PowerLevelContent
	pl.Defaults()
	if c, ok := w.state[storage.StateKeyTuple{Type: spec.MRoomCreate}]; ok {
		pl.Users = map[string]int64{string(c.SenderID()): 100}
	}
	return &pl
}

func (w *writer) isCreator(user string) bool {
	if !w.verImpl.PrivilegedCreators() {
		return false
	}
	c, ok := w.state[storage.StateKeyTuple{Type: spec.MRoomCreate}]
	if !ok {
		return false
	}
	if string(c.SenderID()) == user {
		return true
	}
	var cc struct {
		AdditionalCreators []string `json:"additional_creators"`
	}
	_ = json.Unmarshal(c.Content(), &cc)
	for _, a := range cc.AdditionalCreators {
		if a == user {
			return true
		}
	}
	return false
}

func (w *writer) persist(ctx context.Context, ev gomatrixserverlib.PDU, req Request) (Persisted, error) {
	q := w.q
	pos, err := storage.NextStreamPos(ctx, q)
	if err != nil {
		return Persisted{}, err
	}
	row := storage.EventRow{
		StreamPos:      pos,
		EventID:        ev.EventID(),
		RoomID:         w.room.RoomID,
		Type:           ev.Type(),
		StateKey:       ev.StateKey(),
		Sender:         string(ev.SenderID()),
		OriginServerTS: int64(ev.OriginServerTS()),
		Depth:          ev.Depth(),
		JSON:           ev.JSON(),
		StateBefore:    w.room.StateGroup,
		TxnDevice:      req.TxnDevice,
		TxnID:          req.TxnID,
	}
	row.RelatesTo, row.RelType = relation(ev.Content())
	if ev.Type() == spec.MRoomCreate && ev.StateKey() != nil && *ev.StateKey() == "" {
		if err := storage.InsertRoom(ctx, q, storage.Room{RoomID: w.room.RoomID, Version: string(ev.Version()), Creator: string(ev.SenderID())}, time.Now().UnixMilli()); err != nil {
			return Persisted{}, err
		}
	}
	group := w.room.StateGroup
	var t storage.StateKeyTuple
	if sk := ev.StateKey(); sk != nil {
		t = storage.StateKeyTuple{Type: ev.Type(), StateKey: *sk}
		group, err = storage.InsertStateGroup(ctx, q, w.room.RoomID, w.room.StateGroup, map[storage.StateKeyTuple]string{t: ev.EventID()})
		if err != nil {
			return Persisted{}, err
		}
	}
	row.StateAfter = group
	if err := storage.InsertEvent(ctx, q, row); err != nil {
		return Persisted{}, err
	}
	if sk := ev.StateKey(); sk != nil {
		membership := ""
		if ev.Type() == spec.MRoomMember {
			membership, _ = ev.Membership()
			if err := storage.InsertMembership(ctx, q, pos, w.room.RoomID, *sk, membership, ev.EventID()); err != nil {
				return Persisted{}, err
			}
			if membership == spec.Join || membership == spec.Invite {
				if err := storage.UnforgetRoom(ctx, q, *sk, w.room.RoomID); err != nil {
					return Persisted{}, err
				}
			}
		}
		if err := storage.SetCurrentState(ctx, q, w.room.RoomID, t, ev.EventID(), membership, pos); err != nil {
			return Persisted{}, err
		}
		w.state[t] = ev
	}
	if ev.Type() == spec.MRoomRedaction {
		if err := w.applyRedaction(ctx, ev); err != nil {
			return Persisted{}, err
		}
	}
	if w.engine.inTx != nil {
		if err := w.engine.inTx(ctx, q, w.host, ev); err != nil {
			return Persisted{}, err
		}
	}
	w.room.Extremities = []string{ev.EventID()}
	w.room.Depth = ev.Depth()
	w.room.StateGroup = group
	return Persisted{TenantID: w.host.TenantID, RoomID: w.room.RoomID, EventID: ev.EventID(), StreamPos: pos, Event: ev}, nil
}

func (w *writer) applyRedaction(ctx context.Context, redaction gomatrixserverlib.PDU) error {
	target, err := storage.EventByID(ctx, w.q, redactsOf(redaction))
	if err != nil {
		return err
	}
	if target.RedactedBecause != "" {
		return nil
	}
	redacted, err := w.verImpl.RedactEventJSON(target.JSON)
	if err != nil {
		return fmt.Errorf("redact %s: %w", target.EventID, err)
	}
	return storage.Redact(ctx, w.q, target.EventID, redacted, redaction.EventID())
}

func (w *writer) finish(ctx context.Context) error {
	return storage.SetRoomHead(ctx, w.q, w.room.RoomID, w.room.Extremities, w.room.Depth, w.room.StateGroup)
}

func relation(content []byte) (relatesTo, relType string) {
	var c struct {
		RelatesTo *struct {
			EventID   string `json:"event_id"`
			RelType   string `json:"rel_type"`
			InReplyTo *struct {
				EventID string `json:"event_id"`
			} `json:"m.in_reply_to"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(content, &c) != nil || c.RelatesTo == nil {
		return "", ""
	}
	if c.RelatesTo.RelType != "" && c.RelatesTo.EventID != "" {
		return c.RelatesTo.EventID, c.RelatesTo.RelType
	}
	return "", ""
}

// ObserveStateResolution sets the observer of state resolution durations.
func (e *Engine) ObserveStateResolution(f StateResolutionObserver) { e.onStateRes = f }
