// Package typing keeps who is typing in which room, in memory, per shard: typing is
// ephemeral and every write for a tenant happens on the shard holding its lease.
package typing

import (
	"sort"
	"sync"
	"time"
)

// Tracker holds typing users per tenant and room, each with an expiry.
type Tracker struct {
	mu      sync.Mutex
	serial  int64
	rooms   map[key]*room
	onEvent func(tenantID string)
	now     func() time.Time
}

type key struct{ tenant, room string }

type room struct {
	serial    int64 // the tracker serial of the room's last change
	changedAt time.Time
	users     map[string]time.Time
}

// New returns a tracker; onChange is called (outside the lock) when a tenant's typing changes.
func New(onChange func(tenantID string)) *Tracker {
	return &Tracker{rooms: map[key]*room{}, onEvent: onChange, now: time.Now}
}

// Set marks user typing in a room for timeout, or stops it.
func (t *Tracker) Set(tenantID, roomID, userID string, typing bool, timeout time.Duration) {
	t.mu.Lock()
	k := key{tenantID, roomID}
	r := t.rooms[k]
	if r == nil {
		if !typing {
			t.mu.Unlock()
			return
		}
		r = &room{users: map[string]time.Time{}}
		t.rooms[k] = r
	}
	_, was := r.users[userID]
	if typing {
		r.users[userID] = t.now().Add(timeout)
	} else {
		delete(r.users, userID)
	}
	changed := was != typing
	if changed {
		t.serial++
		r.serial = t.serial
		r.changedAt = t.now()
	}
	t.mu.Unlock()
	if changed && t.onEvent != nil {
		t.onEvent(tenantID)
	}
}

// Serial is the tracker's change counter, part of sync tokens.
func (t *Tracker) Serial() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.serial
}

// Typing returns the users typing in a room and whether that changed after serial since.
func (t *Tracker) Typing(tenantID, roomID string, since int64) ([]string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.rooms[key{tenantID, roomID}]
	if r == nil {
		return []string{}, false
	}
	now := t.now()
	users := make([]string, 0, len(r.users))
	for u, until := range r.users {
		if until.After(now) {
			users = append(users, u)
		}
	}
	sort.Strings(users)
	return users, r.serial > since || since > t.serial
}

// Expire drops typing notices past their timeout and reports tenants that changed. The shard
// calls it periodically.
func (t *Tracker) Expire() {
	t.mu.Lock()
	now := t.now()
	var changed []string
	for k, r := range t.rooms {
		for u, until := range r.users {
			if !until.After(now) {
				delete(r.users, u)
				t.serial++
				r.serial = t.serial
				r.changedAt = now
				changed = append(changed, k.tenant)
			}
		}
		// An empty room is kept for a while so that syncs still see "nobody typing" once.
		if len(r.users) == 0 && now.Sub(r.changedAt) > 5*time.Minute {
			delete(t.rooms, k)
		}
	}
	t.mu.Unlock()
	if t.onEvent != nil {
		for _, id := range changed {
			t.onEvent(id)
		}
	}
}
