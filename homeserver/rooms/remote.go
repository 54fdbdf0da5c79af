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

// Outcome is what became of an event received from another server.
type Outcome string

const (
	Accepted   Outcome = "accepted"
	Rejected   Outcome = "rejected"
	SoftFailed Outcome = "soft_failed"
	Duplicate  Outcome = "duplicate"
)

// MissingEventsError lists prev or auth events the caller must fetch before the event can
// be placed in the room's DAG.
type MissingEventsError struct{ IDs []string }

func (e *MissingEventsError) Error() string { return fmt.Sprintf("%d missing events", len(e.IDs)) }

// StateResolutionObserver is told how long each resolution across forks took.
type StateResolutionObserver func(time.Duration)

// loadPDUs reads events by ID as PDUs of the room's version, keyed by ID.
func loadPDUs(ctx context.Context, q pgdb.DBTX, verImpl gomatrixserverlib.IRoomVersion, ids []string) (map[string]gomatrixserverlib.PDU, map[string]storage.EventRow, error) {
	rows, err := storage.EventsByID(ctx, q, ids)
	if err != nil {
		return nil, nil, err
	}
	pdus := make(map[string]gomatrixserverlib.PDU, len(rows))
	byID := make(map[string]storage.EventRow, len(rows))
	for _, r := range rows {
		ev, err := verImpl.NewEventFromTrustedJSONWithEventID(r.EventID, r.JSON, r.RedactedBecause != "")
		if err != nil {
			return nil, nil, fmt.Errorf("load event %s: %w", r.EventID, err)
		}
		pdus[r.EventID] = ev
		byID[r.EventID] = r
	}
	return pdus, byID, nil
}

// stateAfterRow is the state after a stored event.
func stateAfterRow(ctx context.Context, q pgdb.DBTX, r storage.EventRow) (map[storage.StateKeyTuple]string, error) {
	if r.StateAfter != 0 {
		return storage.StateGroup(ctx, q, r.StateAfter)
	}
	state := map[storage.StateKeyTuple]string{}
	if r.StateBefore != 0 {
		var err error
		if state, err = storage.StateGroup(ctx, q, r.StateBefore); err != nil {
			return nil, err
		}
	}
	if r.StateKey != nil {
		state[storage.StateKeyTuple{Type: r.Type, StateKey: *r.StateKey}] = r.EventID
	}
	return state, nil
}

// resolve merges several state sets with the room version's state resolution algorithm.
func (e *Engine) resolve(ctx context.Context, q pgdb.DBTX, verImpl gomatrixserverlib.IRoomVersion, sets []map[storage.StateKeyTuple]string) (map[storage.StateKeyTuple]string, error) {
	if len(sets) == 1 {
		return sets[0], nil
	}
	// Unconflicted sets need no algorithm.
	same := true
	for _, s := range sets[1:] {
		if len(s) != len(sets[0]) {
			same = false
			break
		}
		for k, v := range s {
			if sets[0][k] != v {
				same = false
				break
			}
		}
	}
	if same {
		return sets[0], nil
	}
	start := time.Now()
	idSet := map[string]bool{}
	for _, s := range sets {
		for _, id := range s {
			idSet[id] = true
		}
	}
	ids := make([]string, 0, len(idSet))
	for id := range idSet {
		ids = append(ids, id)
	}
	stateEvents, _, err := loadPDUs(ctx, q, verImpl, ids)
	if err != nil {
		return nil, err
	}
	// The auth chains of every state event take part in resolution.
	authIDs := map[string]bool{}
	frontier := []string{}
	for _, ev := range stateEvents {
		frontier = append(frontier, ev.AuthEventIDs()...)
	}
	var authEvents []gomatrixserverlib.PDU
	for len(frontier) > 0 {
		var next []string
		var fetch []string
		for _, id := range frontier {
			if !authIDs[id] {
				authIDs[id] = true
				fetch = append(fetch, id)
			}
		}
		got, _, err := loadPDUs(ctx, q, verImpl, fetch)
		if err != nil {
			return nil, err
		}
		for _, ev := range got {
			authEvents = append(authEvents, ev)
			next = append(next, ev.AuthEventIDs()...)
		}
		frontier = next
	}
	stateSets := make([][]gomatrixserverlib.PDU, 0, len(sets))
	for _, s := range sets {
		set := make([]gomatrixserverlib.PDU, 0, len(s))
		for _, id := range s {
			if ev, ok := stateEvents[id]; ok {
				set = append(set, ev)
			}
		}
		stateSets = append(stateSets, set)
	}
	resolved, err := gomatrixserverlib.ResolveConflictsNew(verImpl.Version(), stateSets, authEvents, UserIDForSender,
		func(string) bool { return false })
	if err != nil {
		return nil, fmt.Errorf("resolve state: %w", err)
	}
	out := make(map[storage.StateKeyTuple]string, len(resolved))
	for _, ev := range resolved {
		if sk := ev.StateKey(); sk != nil {
			out[storage.StateKeyTuple{Type: ev.Type(), StateKey: *sk}] = ev.EventID()
		}
	}
	if e.onStateRes != nil {
		e.onStateRes(time.Since(start))
	}
	return out, nil
}

// authEventsFor builds the auth provider the rules need for ev from a state map.
func authEventsFor(ctx context.Context, q pgdb.DBTX, verImpl gomatrixserverlib.IRoomVersion, ev gomatrixserverlib.PDU, state map[storage.StateKeyTuple]string) (*gomatrixserverlib.AuthEvents, error) {
	needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev})
	var ids []string
	for _, t := range needed.Tuples() {
		if id, ok := state[storage.StateKeyTuple{Type: t.EventType, StateKey: t.StateKey}]; ok {
			ids = append(ids, id)
		}
	}
	pdus, _, err := loadPDUs(ctx, q, verImpl, ids)
	if err != nil {
		return nil, err
	}
	list := make([]gomatrixserverlib.PDU, 0, len(pdus))
	for _, p := range pdus {
		list = append(list, p)
	}
	return gomatrixserverlib.NewAuthEvents(list)
}

// PersistRemote places an event received from another server in its room: it must pass the
// auth rules against its own auth events and against the state before it (else it is
// rejected); failing only against the room's current state soft-fails it. Forks are merged
// with the room version's state resolution. The event's signatures and hashes must have
// been checked by the caller. Prev and auth events must be stored already; otherwise a
// *MissingEventsError names them.
func (e *Engine) PersistRemote(ctx context.Context, h *Host, ev gomatrixserverlib.PDU, origin spec.ServerName) (Outcome, error) {
	roomID := ev.RoomID().String()
	unlock := e.lock(h.TenantID + "|" + roomID)
	defer unlock()
	var outcome Outcome
	var persisted []Persisted
	err := h.Store.Tx(ctx, func(q pgdb.DBTX) error {
		persisted = persisted[:0]
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
			return err
		}
		verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(room.Version))
		if err != nil {
			return ErrUnsupportedVersion
		}
		// Auth events first: the event must be allowed by the events it names.
		authPDUs, _, err := loadPDUs(ctx, q, verImpl, ev.AuthEventIDs())
		if err != nil {
			return err
		}
		var missing []string
		for _, id := range ev.AuthEventIDs() {
			if _, ok := authPDUs[id]; !ok {
				missing = append(missing, id)
			}
		}
		_, prevRows, err := loadPDUs(ctx, q, verImpl, ev.PrevEventIDs())
		if err != nil {
			return err
		}
		for _, id := range ev.PrevEventIDs() {
			if _, ok := prevRows[id]; !ok {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return &MissingEventsError{IDs: missing}
		}
		list := make([]gomatrixserverlib.PDU, 0, len(authPDUs))
		for _, p := range authPDUs {
			list = append(list, p)
		}
		if verImpl.DomainlessRoomIDs() {
			// v12: the create event is implied by the room ID, not listed in auth_events.
			if cs, err := storage.CurrentState(ctx, q, roomID, []storage.StateKeyTuple{{Type: spec.MRoomCreate}}); err == nil && len(cs) == 1 {
				if c, _, err := loadPDUs(ctx, q, verImpl, []string{cs[0].EventID}); err == nil {
					for _, p := range c {
						list = append(list, p)
					}
				}
			}
		}
		own, err := gomatrixserverlib.NewAuthEvents(list)
		if err != nil {
			return err
		}
		if err := gomatrixserverlib.Allowed(ev, own, UserIDForSender); err != nil {
			outcome = Rejected
			return nil
		}
		// The state before the event: after its prev events, resolved if they disagree.
		var sets []map[storage.StateKeyTuple]string
		for _, id := range ev.PrevEventIDs() {
			st, err := stateAfterRow(ctx, q, prevRows[id])
			if err != nil {
				return err
			}
			sets = append(sets, st)
		}
		before, err := e.resolve(ctx, q, verImpl, sets)
		if err != nil {
			return err
		}
		atState, err := authEventsFor(ctx, q, verImpl, ev, before)
		if err != nil {
			return err
		}
		if err := gomatrixserverlib.Allowed(ev, atState, UserIDForSender); err != nil {
			outcome = Rejected
			return nil
		}
		current, err := storage.StateGroup(ctx, q, room.StateGroup)
		if err != nil {
			return err
		}
		atCurrent, err := authEventsFor(ctx, q, verImpl, ev, current)
		if err != nil {
			return err
		}
		softFailed := gomatrixserverlib.Allowed(ev, atCurrent, UserIDForSender) != nil

		beforeGroup, err := storage.InsertStateGroup(ctx, q, roomID, 0, before)
		if err != nil {
			return err
		}
		after := before
		afterGroup := beforeGroup
		if sk := ev.StateKey(); sk != nil {
			after = make(map[storage.StateKeyTuple]string, len(before)+1)
			for k, v := range before {
				after[k] = v
			}
			after[storage.StateKeyTuple{Type: ev.Type(), StateKey: *sk}] = ev.EventID()
			if afterGroup, err = storage.InsertStateGroup(ctx, q, roomID, beforeGroup, map[storage.StateKeyTuple]string{{Type: ev.Type(), StateKey: *sk}: ev.EventID()}); err != nil {
				return err
			}
		}
		pos, err := storage.NextStreamPos(ctx, q)
		if err != nil {
			return err
		}
		row := storage.EventRow{StreamPos: pos, EventID: ev.EventID(), RoomID: roomID, Type: ev.Type(), StateKey: ev.StateKey(),
			Sender: string(ev.SenderID()), OriginServerTS: int64(ev.OriginServerTS()), Depth: ev.Depth(), JSON: ev.JSON(),
			StateBefore: beforeGroup, StateAfter: afterGroup, SoftFailed: softFailed, Origin: string(origin)}
		row.RelatesTo, row.RelType = relation(ev.Content())
		if err := storage.InsertEvent(ctx, q, row); err != nil {
			return err
		}
		if softFailed {
			outcome = SoftFailed
			return nil
		}
		// The new forward extremities, and the room's current state across them.
		prev := map[string]bool{}
		for _, id := range ev.PrevEventIDs() {
			prev[id] = true
		}
		extremities := []string{ev.EventID()}
		for _, id := range room.Extremities {
			if !prev[id] {
				extremities = append(extremities, id)
			}
		}
		newCurrent := after
		newGroup := afterGroup
		if len(extremities) > 1 {
			_, extRows, err := loadPDUs(ctx, q, verImpl, extremities[1:])
			if err != nil {
				return err
			}
			sets := []map[storage.StateKeyTuple]string{after}
			for _, r := range extRows {
				st, err := stateAfterRow(ctx, q, r)
				if err != nil {
					return err
				}
				sets = append(sets, st)
			}
			if newCurrent, err = e.resolve(ctx, q, verImpl, sets); err != nil {
				return err
			}
			if newGroup, err = storage.InsertStateGroup(ctx, q, roomID, 0, newCurrent); err != nil {
				return err
			}
		}
		if err := e.applyCurrentState(ctx, q, verImpl, roomID, current, newCurrent, pos); err != nil {
			return err
		}
		if ev.Type() == spec.MRoomRedaction {
			w := &writer{engine: e, host: h, q: q, room: room, verImpl: verImpl}
			if target := redactsOf(ev); target != "" {
				if t, err := storage.EventByID(ctx, q, target); err == nil && t.RoomID == roomID {
					// Only redact what the redaction's server may redact: its own events, or with power.
					if err := w.applyRedaction(ctx, ev); err != nil {
						return err
					}
				}
			}
		}
		depth := room.Depth
		if ev.Depth() > depth {
			depth = ev.Depth()
		}
		if len(extremities) > 20 {
			extremities = extremities[:20]
		}
		if err := storage.SetRoomHead(ctx, q, roomID, extremities, depth, newGroup); err != nil {
			return err
		}
		outcome = Accepted
		persisted = append(persisted, Persisted{TenantID: h.TenantID, RoomID: roomID, EventID: ev.EventID(), StreamPos: pos, Event: ev, Remote: true})
		return nil
	})
	if err != nil {
		return "", err
	}
	for _, p := range persisted {
		e.metrics.persisted.WithLabelValues("federation").Inc()
		if e.onEvent != nil {
			e.onEvent(p)
		}
	}
	return outcome, nil
}

// applyCurrentState moves the current_state table from old to new, recording membership changes.
func (e *Engine) applyCurrentState(ctx context.Context, q pgdb.DBTX, verImpl gomatrixserverlib.IRoomVersion, roomID string, old, new map[storage.StateKeyTuple]string, pos int64) error {
	var changed []string
	for k, id := range new {
		if old[k] != id {
			changed = append(changed, id)
		}
	}
	pdus, _, err := loadPDUs(ctx, q, verImpl, changed)
	if err != nil {
		return err
	}
	for _, ev := range pdus {
		sk := ev.StateKey()
		if sk == nil {
			continue
		}
		membership := ""
		if ev.Type() == spec.MRoomMember {
			membership, _ = ev.Membership()
			if err := storage.InsertMembership(ctx, q, pos, roomID, *sk, membership, ev.EventID()); err != nil {
				return err
			}
		}
		if err := storage.SetCurrentState(ctx, q, roomID, storage.StateKeyTuple{Type: ev.Type(), StateKey: *sk}, ev.EventID(), membership, pos); err != nil {
			return err
		}
	}
	for k := range old {
		if _, ok := new[k]; !ok {
			if err := storage.DeleteCurrentState(ctx, q, roomID, k); err != nil {
				return err
			}
		}
	}
	return nil
}
