package rooms

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/storage"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// InTx is called inside the transaction that persists a local event, after the event is
// stored: the federation outbox uses it so that an event and its delivery are committed
// together.
type InTx func(ctx context.Context, q pgdb.DBTX, h *Host, ev gomatrixserverlib.PDU) error

// SetInTx installs the in-transaction hook for local events.
func (e *Engine) SetInTx(f InTx) { e.inTx = f }

// Template builds an event on the room's current head for another server to sign (make_join,
// make_leave): prev events, depth and auth events filled in, checked against the auth rules.
// It returns the event and the state the auth rules used.
func (e *Engine) Template(ctx context.Context, h *Host, proto *gomatrixserverlib.ProtoEvent) (gomatrixserverlib.PDU, []gomatrixserverlib.PDU, error) {
	var ev gomatrixserverlib.PDU
	var authState []gomatrixserverlib.PDU
	err := h.Store.Tx(ctx, func(q pgdb.DBTX) error {
		room, err := storage.GetRoom(ctx, q, proto.RoomID)
		if errors.Is(err, storage.ErrNotFound) {
			return ErrRoomNotFound
		}
		if err != nil {
			return err
		}
		w := &writer{engine: e, host: h, q: q, room: room}
		if err := w.load(ctx); err != nil {
			return err
		}
		proto.PrevEvents = room.Extremities
		proto.Depth = room.Depth + 1
		proto.Version = w.verImpl
		needed, err := gomatrixserverlib.StateNeededForProtoEvent(proto)
		if err != nil {
			return &BadEventError{Reason: err.Error()}
		}
		for _, t := range needed.Tuples() {
			if s, ok := w.state[storage.StateKeyTuple{Type: t.EventType, StateKey: t.StateKey}]; ok {
				authState = append(authState, s)
			}
		}
		provider, err := gomatrixserverlib.NewAuthEvents(authState)
		if err != nil {
			return err
		}
		refs, err := needed.AuthEventReferences(provider)
		if err != nil {
			return &ForbiddenError{Reason: err.Error()}
		}
		if w.verImpl.DomainlessRoomIDs() {
			create := "$" + proto.RoomID[1:]
			kept := refs[:0]
			for _, id := range refs {
				if id != create {
					kept = append(kept, id)
				}
			}
			refs = kept
		}
		proto.AuthEvents = refs
		builder := w.verImpl.NewEventBuilderFromProtoEvent(proto)
		ev, err = builder.Build(e.now(), h.ServerName, h.KeyID, h.Key)
		if err != nil {
			return &BadEventError{Reason: err.Error()}
		}
		return nil
	})
	return ev, authState, err
}

// RoomVersion returns a room's version, or ErrRoomNotFound.
func RoomVersion(ctx context.Context, h *Host, roomID string) (gomatrixserverlib.IRoomVersion, error) {
	var v string
	err := h.Store.Tx(ctx, func(q pgdb.DBTX) error {
		r, err := storage.GetRoom(ctx, q, roomID)
		v = r.Version
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrRoomNotFound
	}
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(v))
}

// PersistJoin stores a room this tenant joined through another server: the auth chain and
// state from send_join as outliers, the state before the join, and the join itself as the
// room's head. Signatures of every event must have been verified by the caller
// (gomatrixserverlib.PerformJoin does).
func (e *Engine) PersistJoin(ctx context.Context, h *Host, join gomatrixserverlib.PDU, state, authChain []gomatrixserverlib.PDU, origin spec.ServerName) error {
	roomID := join.RoomID().String()
	unlock := e.lock(h.TenantID + "|" + roomID)
	defer unlock()
	var persisted []Persisted
	err := h.Store.Tx(ctx, func(q pgdb.DBTX) error {
		persisted = persisted[:0]
		room, err := storage.RoomForUpdate(ctx, q, roomID)
		known := err == nil
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		var creator string
		for _, ev := range state {
			if ev.Type() == spec.MRoomCreate && ev.StateKeyEquals("") {
				creator = string(ev.SenderID())
			}
		}
		if creator == "" {
			return &BadEventError{Reason: "the join's state has no create event"}
		}
		if !known {
			if err := storage.InsertRoom(ctx, q, storage.Room{RoomID: roomID, Version: string(join.Version()), Creator: creator}, time.Now().UnixMilli()); err != nil {
				return err
			}
			room = storage.Room{RoomID: roomID, Version: string(join.Version())}
		}
		for _, ev := range append(append([]gomatrixserverlib.PDU{}, authChain...), state...) {
			if err := storeOutlier(ctx, q, ev, origin); err != nil {
				return err
			}
		}
		before := map[storage.StateKeyTuple]string{}
		for _, ev := range state {
			if sk := ev.StateKey(); sk != nil {
				before[storage.StateKeyTuple{Type: ev.Type(), StateKey: *sk}] = ev.EventID()
			}
		}
		beforeGroup, err := storage.InsertStateGroup(ctx, q, roomID, 0, before)
		if err != nil {
			return err
		}
		t := storage.StateKeyTuple{Type: join.Type(), StateKey: *join.StateKey()}
		afterGroup, err := storage.InsertStateGroup(ctx, q, roomID, beforeGroup, map[storage.StateKeyTuple]string{t: join.EventID()})
		if err != nil {
			return err
		}
		after := make(map[storage.StateKeyTuple]string, len(before)+1)
		for k, v := range before {
			after[k] = v
		}
		after[t] = join.EventID()
		pos, err := storage.NextStreamPos(ctx, q)
		if err != nil {
			return err
		}
		if _, err := storage.EventByID(ctx, q, join.EventID()); err == nil {
			return nil // joined already (a retried join)
		}
		if err := storage.InsertEvent(ctx, q, storage.EventRow{StreamPos: pos, EventID: join.EventID(), RoomID: roomID, Type: join.Type(),
			StateKey: join.StateKey(), Sender: string(join.SenderID()), OriginServerTS: int64(join.OriginServerTS()), Depth: join.Depth(),
			JSON: join.JSON(), StateBefore: beforeGroup, StateAfter: afterGroup, Origin: string(origin)}); err != nil {
			return err
		}
		old := map[storage.StateKeyTuple]string{}
		if known && room.StateGroup != 0 {
			if old, err = storage.StateGroup(ctx, q, room.StateGroup); err != nil {
				return err
			}
		}
		verImpl, err := gomatrixserverlib.GetRoomVersion(join.Version())
		if err != nil {
			return ErrUnsupportedVersion
		}
		if err := e.applyCurrentState(ctx, q, verImpl, roomID, old, after, pos); err != nil {
			return err
		}
		if err := storage.UnforgetRoom(ctx, q, string(join.SenderID()), roomID); err != nil {
			return err
		}
		if err := storage.SetRoomHead(ctx, q, roomID, []string{join.EventID()}, join.Depth(), afterGroup); err != nil {
			return err
		}
		persisted = append(persisted, Persisted{TenantID: h.TenantID, RoomID: roomID, EventID: join.EventID(), StreamPos: pos, Event: join, Remote: true})
		return nil
	})
	if err != nil {
		return err
	}
	e.publish(persisted)
	return nil
}

// StoreOutliers stores events fetched to fill in auth chains, outside the timeline.
func (e *Engine) StoreOutliers(ctx context.Context, h *Host, events []gomatrixserverlib.PDU, origin spec.ServerName) error {
	return h.Store.Tx(ctx, func(q pgdb.DBTX) error {
		for _, ev := range events {
			if err := storeOutlier(ctx, q, ev, origin); err != nil {
				return err
			}
		}
		return nil
	})
}

func storeOutlier(ctx context.Context, q pgdb.DBTX, ev gomatrixserverlib.PDU, origin spec.ServerName) error {
	if _, err := storage.EventByID(ctx, q, ev.EventID()); err == nil {
		return nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	pos, err := storage.NextStreamPos(ctx, q)
	if err != nil {
		return err
	}
	err = storage.InsertEvent(ctx, q, storage.EventRow{StreamPos: pos, EventID: ev.EventID(), RoomID: ev.RoomID().String(), Type: ev.Type(),
		StateKey: ev.StateKey(), Sender: string(ev.SenderID()), OriginServerTS: int64(ev.OriginServerTS()), Depth: ev.Depth(),
		JSON: ev.JSON(), Outlier: true, Origin: string(origin)})
	if errors.Is(err, storage.ErrExists) {
		return nil
	}
	return err
}

// Build builds and authorises a local event on the room's head without storing it: invites
// to other servers must be signed by the invitee's server first. Persist it afterwards with
// PersistRemote (its prev events are ours).
func (e *Engine) Build(ctx context.Context, h *Host, req Request) (gomatrixserverlib.PDU, error) {
	var ev gomatrixserverlib.PDU
	err := h.Store.Tx(ctx, func(q pgdb.DBTX) error {
		room, err := storage.GetRoom(ctx, q, req.RoomID)
		if errors.Is(err, storage.ErrNotFound) {
			return ErrRoomNotFound
		}
		if err != nil {
			return err
		}
		w := &writer{engine: e, host: h, q: q, room: room}
		if err := w.load(ctx); err != nil {
			return err
		}
		ev, err = w.build(req)
		return err
	})
	return ev, err
}

// PersistSigned stores a local event that another server had to sign first (an invite of
// that server's user, built with Build). Unlike PersistRemote it is a local event: when the
// room's head has not moved since Build, it is checked against the current state and stored
// like Send stores events, with the in-transaction hook queueing it for the room's other
// servers in the same transaction, and published as local. When the head moved meanwhile,
// it is placed in the DAG by PersistRemote (auth checks, state resolution across the fork)
// and queued in a second transaction.
func (e *Engine) PersistSigned(ctx context.Context, h *Host, ev gomatrixserverlib.PDU) (Outcome, error) {
	outcome, placed, err := e.persistSignedOnHead(ctx, h, ev)
	if err != nil || placed {
		return outcome, err
	}
	outcome, err = e.PersistRemote(ctx, h, ev, h.ServerName)
	if err != nil || outcome == Rejected || outcome == Duplicate || e.inTx == nil {
		return outcome, err
	}
	err = h.Store.Tx(ctx, func(q pgdb.DBTX) error { return e.inTx(ctx, q, h, ev) })
	return outcome, err
}

// persistSignedOnHead stores ev as the room's new head if its prev events are the head;
// placed is false (and nothing is stored) otherwise.
func (e *Engine) persistSignedOnHead(ctx context.Context, h *Host, ev gomatrixserverlib.PDU) (Outcome, bool, error) {
	roomID := ev.RoomID().String()
	unlock := e.lock(h.TenantID + "|" + roomID)
	defer unlock()
	var persisted []Persisted
	var outcome Outcome
	placed := true
	err := h.Store.Tx(ctx, func(q pgdb.DBTX) error {
		persisted, outcome, placed = persisted[:0], "", true
		if _, err := storage.EventByID(ctx, q, ev.EventID()); err == nil {
			outcome = Duplicate
			return nil
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		room, err := storage.RoomForUpdate(ctx, q, roomID)
		if errors.Is(err, storage.ErrNotFound) {
			return ErrRoomNotFound
		}
		if err != nil {
			return fmt.Errorf("lock room %s: %w", roomID, err)
		}
		if !sameIDs(room.Extremities, ev.PrevEventIDs()) {
			placed = false
			return nil
		}
		w := &writer{engine: e, host: h, q: q, room: room}
		if err := w.load(ctx); err != nil {
			return err
		}
		needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev})
		var authState []gomatrixserverlib.PDU
		for _, t := range needed.Tuples() {
			if s, ok := w.state[storage.StateKeyTuple{Type: t.EventType, StateKey: t.StateKey}]; ok {
				authState = append(authState, s)
			}
		}
		authEvents, err := gomatrixserverlib.NewAuthEvents(authState)
		if err != nil {
			return fmt.Errorf("auth events: %w", err)
		}
		if err := gomatrixserverlib.Allowed(ev, authEvents, UserIDForSender); err != nil {
			outcome = Rejected
			return nil
		}
		p, err := w.persist(ctx, ev, Request{})
		if err != nil {
			return err
		}
		persisted = append(persisted, p)
		outcome = Accepted
		return w.finish(ctx)
	})
	if err != nil {
		return "", false, err
	}
	e.publish(persisted)
	return outcome, placed, nil
}

func sameIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	set := make(map[string]bool, len(a))
	for _, id := range a {
		set[id] = true
	}
	for _, id := range b {
		if !set[id] {
			return false
		}
	}
	return true
}
