// Package presence keeps users' presence (online, unavailable, offline, a status message, when
// they were last active) in memory, per shard, like typing: presence is ephemeral and every
// write for a tenant happens on the shard holding its lease. A Redis mirror, when configured,
// lets a tenant that moves to another shard keep its users' status; without Redis, or with
// Redis down, presence lives in memory only.
//
// Defaults follow Synapse: a local user whose client stops syncing for SyncTimeout (30s after
// the last sync ended) goes offline; an online user without activity (a request that is not a
// read) for IdleTimeout (5 min) becomes unavailable, and activity makes an unavailable user
// online again; currently_active holds while the user was active within ActiveWindow (1 min);
// a remote user not heard of for RemoteTimeout (30 min) goes offline, and local users still
// online are announced to other servers again every RepeatInterval (25 min). Offline users are
// forgotten ForgetAfter (1 h) after their last change, which bounds memory.
package presence

import (
	"context"
	"sort"
	"sync"
	"time"
)

// The presence states of the spec.
const (
	Online      = "online"
	Unavailable = "unavailable"
	Offline     = "offline"
)

// Valid reports whether s is a presence state of the spec.
func Valid(s string) bool { return s == Online || s == Unavailable || s == Offline }

// Config holds the timeouts; zero values take the defaults.
type Config struct {
	SyncTimeout    time.Duration // no sync for this long after the last one ended: offline
	IdleTimeout    time.Duration // online without activity for this long: unavailable
	ActiveWindow   time.Duration // currently_active while active within this
	RemoteTimeout  time.Duration // a remote user not updated for this long: offline
	RepeatInterval time.Duration // local users not offline are sent to other servers again
	ForgetAfter    time.Duration // offline entries are dropped this long after their last change
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.SyncTimeout, 30*time.Second)
	def(&c.IdleTimeout, 5*time.Minute)
	def(&c.ActiveWindow, time.Minute)
	def(&c.RemoteTimeout, 30*time.Minute)
	def(&c.RepeatInterval, 25*time.Minute)
	def(&c.ForgetAfter, time.Hour)
	return c
}

// Status is one user's presence as clients and other servers see it.
type Status struct {
	UserID          string
	Presence        string
	StatusMsg       string
	LastActive      time.Time // zero: never active here
	CurrentlyActive bool
}

// Event returns the m.presence event of s for /sync, at now.
func (s Status) Event(now time.Time) map[string]any {
	return map[string]any{"type": "m.presence", "sender": s.UserID, "content": s.Content(now, false)}
}

// Content is the presence body of GET /presence/{userId}/status (withUser false) or of an
// m.presence EDU push entry (withUser true).
func (s Status) Content(now time.Time, withUser bool) map[string]any {
	c := map[string]any{"presence": s.Presence, "currently_active": s.CurrentlyActive}
	if withUser {
		c["user_id"] = s.UserID
	}
	if !s.LastActive.IsZero() {
		ago := now.Sub(s.LastActive).Milliseconds()
		if ago < 0 {
			ago = 0
		}
		c["last_active_ago"] = ago
	}
	if s.StatusMsg != "" {
		c["status_msg"] = s.StatusMsg
	}
	return c
}

// entry is a user's presence with the bookkeeping behind its timeouts.
type entry struct {
	Status
	remote     bool
	serial     int64     // the tracker serial of the last visible change
	changedAt  time.Time // last visible change
	updatedAt  time.Time // last write of any kind (remote: last EDU)
	syncing    int       // syncs in progress (local users)
	lastSync   time.Time // when the last sync ended or started
	lastSentAt time.Time // last time queued for other servers
}

type tenantState struct {
	users     map[string]*entry
	loaded    bool // the Redis mirror was read
	changedAt time.Time
	serial    int64 // the tracker serial of the tenant's last change
}

// Update is a change to send elsewhere: to other servers (local users) or to the mirror.
type Update struct {
	TenantID string
	Status   Status
	Remote   bool
	At       time.Time // when the change was made
}

// Tracker holds presence per tenant and user.
type Tracker struct {
	cfg      Config
	mirror   *Mirror
	onChange func(tenantID string)
	now      func() time.Time

	mu       sync.Mutex
	serial   int64
	tenants  map[string]*tenantState
	outbound map[outKey]Update // local changes for other servers, latest per user
	dirty    map[outKey]Update // changes for the mirror, latest per user
	resend   []resend          // Resend calls not yet due
}

type resend struct {
	tenant, user string
	due          time.Time
}

type outKey struct{ tenant, user string }

// New returns a tracker; onChange is called (outside the lock) when a tenant's presence
// changes. mirror may be nil.
func New(cfg Config, mirror *Mirror, onChange func(tenantID string)) *Tracker {
	return &Tracker{cfg: cfg.withDefaults(), mirror: mirror, onChange: onChange, now: time.Now,
		tenants: map[string]*tenantState{}, outbound: map[outKey]Update{}, dirty: map[outKey]Update{}}
}

// SetConfig replaces the timeouts (tests shorten them).
func (t *Tracker) SetConfig(cfg Config) {
	t.mu.Lock()
	t.cfg = cfg.withDefaults()
	t.mu.Unlock()
}

// Serial is the tracker's change counter, part of sync tokens.
func (t *Tracker) Serial() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.serial
}

// Load reads a tenant's presence from the mirror the first time the tenant is used on this
// shard. Redis errors leave the tenant in memory only.
func (t *Tracker) Load(ctx context.Context, tenantID string) {
	t.mu.Lock()
	ts := t.tenant(tenantID)
	if ts.loaded {
		t.mu.Unlock()
		return
	}
	ts.loaded = true
	forget := t.cfg.ForgetAfter
	mirror := t.mirror
	t.mu.Unlock()
	if mirror == nil {
		return
	}
	saved := mirror.load(ctx, tenantID, forget)
	if len(saved) == 0 {
		return
	}
	t.mu.Lock()
	ts = t.tenant(tenantID)
	for _, s := range saved {
		if e := ts.users[s.Status.UserID]; e != nil && !e.updatedAt.Before(s.UpdatedAt) {
			continue // what this shard knows is newer
		}
		t.serial++
		e := &entry{Status: s.Status, remote: s.Remote, serial: t.serial, changedAt: s.UpdatedAt, updatedAt: s.UpdatedAt,
			lastSync: s.UpdatedAt, lastSentAt: s.UpdatedAt}
		if old := ts.users[s.Status.UserID]; old != nil {
			e.syncing = old.syncing
		}
		ts.users[s.Status.UserID] = e
		ts.changedAt, ts.serial = t.now(), t.serial
	}
	t.mu.Unlock()
	if t.onChange != nil {
		t.onChange(tenantID)
	}
}

// Reload makes the next Load read the mirror again: the shard calls it when it takes a tenant
// (back) over, as another shard may have changed its presence meanwhile. Entries newer than
// what this shard holds win.
func (t *Tracker) Reload(tenantID string) {
	t.mu.Lock()
	if ts := t.tenants[tenantID]; ts != nil {
		ts.loaded = false
	}
	t.mu.Unlock()
}

func (t *Tracker) tenant(id string) *tenantState {
	ts := t.tenants[id]
	if ts == nil {
		ts = &tenantState{users: map[string]*entry{}, changedAt: t.now()}
		t.tenants[id] = ts
	}
	return ts
}

func (t *Tracker) localEntry(ts *tenantState, userID string, now time.Time) *entry {
	e := ts.users[userID]
	if e == nil {
		e = &entry{Status: Status{UserID: userID, Presence: Offline}, changedAt: now, updatedAt: now}
		ts.users[userID] = e
	}
	e.remote = false
	return e
}

// change records a visible change of e (under the lock); the caller notifies.
func (t *Tracker) change(tenantID string, ts *tenantState, e *entry, now time.Time) {
	t.serial++
	e.serial, e.changedAt, e.updatedAt = t.serial, now, now
	ts.changedAt, ts.serial = now, t.serial
	k := outKey{tenantID, e.UserID}
	u := Update{TenantID: tenantID, Status: e.Status, Remote: e.remote, At: now}
	if !e.remote {
		t.outbound[k] = u
		e.lastSentAt = now
	}
	t.dirty[k] = u
}

func (t *Tracker) notify(tenantID string) {
	if t.onChange != nil {
		t.onChange(tenantID)
	}
}

// Set sets a local user's presence and status message (PUT /presence/{userId}/status).
// Setting online counts as activity.
func (t *Tracker) Set(tenantID, userID, presence, statusMsg string) {
	t.mu.Lock()
	now := t.now()
	ts := t.tenant(tenantID)
	e := t.localEntry(ts, userID, now)
	e.Presence, e.StatusMsg = presence, statusMsg
	e.lastSync = now // a client is around: the offline timeout starts again
	switch presence {
	case Online:
		e.LastActive, e.CurrentlyActive = now, true
	default:
		e.CurrentlyActive = false
	}
	t.change(tenantID, ts, e, now)
	t.mu.Unlock()
	t.notify(tenantID)
}

// Active records activity of a local user (a request other than a read): last_active moves,
// an unavailable user is online again. Offline users stay offline (their client says when
// it syncs).
func (t *Tracker) Active(tenantID, userID string) {
	t.mu.Lock()
	now := t.now()
	ts := t.tenant(tenantID)
	e := ts.users[userID]
	if e == nil || e.remote || e.Presence == Offline {
		t.mu.Unlock()
		return
	}
	e.LastActive = now
	changed := false
	if e.Presence == Unavailable {
		e.Presence, changed = Online, true
	}
	if !e.CurrentlyActive {
		e.CurrentlyActive, changed = true, true
	}
	if changed {
		t.change(tenantID, ts, e, now)
	}
	t.mu.Unlock()
	if changed {
		t.notify(tenantID)
	}
}

// Syncing records that a local user's client started a /sync with set_presence (online by
// default, "" means online); done must be called when the sync ends. With "offline" the sync
// does not touch presence.
func (t *Tracker) Syncing(tenantID, userID, setPresence string) (done func()) {
	if setPresence == "" {
		setPresence = Online
	}
	if setPresence == Offline {
		return func() {}
	}
	t.mu.Lock()
	now := t.now()
	ts := t.tenant(tenantID)
	e := t.localEntry(ts, userID, now)
	e.syncing++
	e.lastSync = now
	changed := false
	switch {
	case setPresence == Online && e.Presence == Offline:
		e.Presence, e.LastActive, e.CurrentlyActive, changed = Online, now, true, true
	case setPresence == Unavailable && e.Presence != Unavailable:
		e.Presence, e.CurrentlyActive, changed = Unavailable, false, true
	}
	if changed {
		t.change(tenantID, ts, e, now)
	}
	t.mu.Unlock()
	if changed {
		t.notify(tenantID)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			if ts := t.tenants[tenantID]; ts != nil {
				if e := ts.users[userID]; e != nil && e.syncing > 0 {
					e.syncing--
					e.lastSync = t.now()
				}
			}
			t.mu.Unlock()
		})
	}
}

// SetRemote applies presence another server sent for one of its users.
func (t *Tracker) SetRemote(tenantID string, s Status) {
	t.mu.Lock()
	now := t.now()
	ts := t.tenant(tenantID)
	e := ts.users[s.UserID]
	if e == nil {
		e = &entry{}
		ts.users[s.UserID] = e
	}
	e.remote = true
	changed := e.Status.Presence != s.Presence || e.StatusMsg != s.StatusMsg || e.CurrentlyActive != s.CurrentlyActive ||
		!e.LastActive.Equal(s.LastActive)
	e.Status = s
	if changed {
		t.change(tenantID, ts, e, now)
	} else {
		e.updatedAt = now
	}
	t.mu.Unlock()
	if changed {
		t.notify(tenantID)
	}
}

// Changed reports whether a tenant's presence may have changed after serial since (a token
// from another shard or from before a restart always may).
func (t *Tracker) Changed(tenantID string, since int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if since > t.serial {
		return true
	}
	ts := t.tenants[tenantID]
	return ts != nil && ts.serial > since
}

// Get returns a user's presence; a user the tracker does not know is offline.
func (t *Tracker) Get(tenantID, userID string) Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ts := t.tenants[tenantID]; ts != nil {
		if e := ts.users[userID]; e != nil {
			return e.Status
		}
	}
	return Status{UserID: userID, Presence: Offline}
}

// Since returns the presence of the users of a tenant that changed after serial since and
// up to upto (a Serial read earlier), sorted by user. When since is ahead of the tracker (a
// token from another shard or before a restart) every known user is returned. initial
// returns every known user not offline.
func (t *Tracker) Since(tenantID string, since, upto int64, initial bool) []Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	ts := t.tenants[tenantID]
	if ts == nil {
		return nil
	}
	all := since > t.serial
	var out []Status
	for _, e := range ts.users {
		switch {
		case initial:
			if e.Presence == Offline || e.serial > upto {
				continue
			}
		case all:
		case e.serial <= since || e.serial > upto:
			continue
		}
		out = append(out, e.Status)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UserID < out[j].UserID })
	return out
}

// Expire applies the timeouts and forgets old offline users. The shard calls it periodically.
func (t *Tracker) Expire() {
	t.mu.Lock()
	now := t.now()
	c := t.cfg
	changed := map[string]bool{}
	for id, ts := range t.tenants {
		for uid, e := range ts.users {
			switch {
			case e.remote:
				if e.Presence != Offline && now.Sub(e.updatedAt) > c.RemoteTimeout {
					e.Presence, e.CurrentlyActive = Offline, false
					t.change(id, ts, e, now)
					changed[id] = true
				}
			case e.syncing == 0 && e.Presence != Offline && now.Sub(e.lastSync) > c.SyncTimeout &&
				now.Sub(e.LastActive) > c.SyncTimeout:
				e.Presence, e.CurrentlyActive = Offline, false
				t.change(id, ts, e, now)
				changed[id] = true
			case e.Presence == Online && now.Sub(e.LastActive) > c.IdleTimeout:
				e.Presence, e.CurrentlyActive = Unavailable, false
				t.change(id, ts, e, now)
				changed[id] = true
			case e.CurrentlyActive && now.Sub(e.LastActive) > c.ActiveWindow:
				e.CurrentlyActive = false
				t.change(id, ts, e, now)
				changed[id] = true
			case e.Presence != Offline && now.Sub(e.lastSentAt) > c.RepeatInterval:
				// Other servers forget users they have not heard of: say it again.
				t.outbound[outKey{id, uid}] = Update{TenantID: id, Status: e.Status, At: now}
				e.lastSentAt = now
			}
			if e.Presence == Offline && e.syncing == 0 && now.Sub(e.changedAt) > c.ForgetAfter {
				delete(ts.users, uid)
			}
		}
		if len(ts.users) == 0 && now.Sub(ts.changedAt) > c.ForgetAfter {
			delete(t.tenants, id)
		}
	}
	pending := t.resend[:0]
	for _, r := range t.resend {
		if now.Before(r.due) {
			pending = append(pending, r)
		} else {
			t.resendNow(r.tenant, r.user)
		}
	}
	t.resend = pending
	t.mu.Unlock()
	for id := range changed {
		t.notify(id)
	}
}

// Resend queues the presence of a tenant's local users who are not offline (one user, or
// all when userID is "") for other servers again, after a delay: a server that just came to
// share a room with them has not heard of them (and may still be storing the room's state
// when its join is accepted here). Calls beyond 1,000 pending are dropped.
func (t *Tracker) Resend(tenantID, userID string, after time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.resend) < 1000 {
		t.resend = append(t.resend, resend{tenant: tenantID, user: userID, due: t.now().Add(after)})
	}
}

func (t *Tracker) resendNow(tenantID, userID string) {
	ts := t.tenants[tenantID]
	if ts == nil {
		return
	}
	now := t.now()
	for uid, e := range ts.users {
		if e.remote || e.Presence == Offline || (userID != "" && uid != userID) {
			continue
		}
		t.outbound[outKey{tenantID, uid}] = Update{TenantID: tenantID, Status: e.Status, At: now}
		e.lastSentAt = now
	}
}

// TakeOutbound returns and clears the local users' changes to send to other servers.
func (t *Tracker) TakeOutbound() []Update {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.outbound) == 0 {
		return nil
	}
	out := make([]Update, 0, len(t.outbound))
	for k, u := range t.outbound {
		out = append(out, u)
		delete(t.outbound, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].TenantID != out[j].TenantID {
			return out[i].TenantID < out[j].TenantID
		}
		return out[i].Status.UserID < out[j].Status.UserID
	})
	return out
}

func (t *Tracker) takeDirty() []Update {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.dirty) == 0 {
		return nil
	}
	out := make([]Update, 0, len(t.dirty))
	for k, u := range t.dirty {
		out = append(out, u)
		delete(t.dirty, k)
	}
	return out
}

// Run applies the timeouts every interval, writes changes to the mirror and hands local
// users' changes to send (to other servers; nil: none), until ctx ends.
func (t *Tracker) Run(ctx context.Context, interval time.Duration, send func(ctx context.Context, updates []Update)) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// Last changes still go out, briefly.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			t.flush(fctx, send)
			cancel()
			return
		case <-tick.C:
		}
		t.Expire()
		t.flush(ctx, send)
	}
}

func (t *Tracker) flush(ctx context.Context, send func(ctx context.Context, updates []Update)) {
	t.mu.Lock()
	ttl, mirror := t.cfg.ForgetAfter, t.mirror
	t.mu.Unlock()
	if dirty := t.takeDirty(); mirror != nil {
		mirror.save(ctx, dirty, ttl)
	}
	if out := t.TakeOutbound(); len(out) > 0 && send != nil {
		send(ctx, out)
	}
}

// SetMirror sets the Redis mirror; call it before the tracker is used.
func (t *Tracker) SetMirror(m *Mirror) {
	t.mu.Lock()
	t.mirror = m
	t.mu.Unlock()
}
