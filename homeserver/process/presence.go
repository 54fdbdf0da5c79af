package process

import (
	"context"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/presence"
	"github.com/atoll-matrix/atoll/homeserver/rooms"
)

// runPresence applies presence timeouts every second, mirrors changes to Redis and sends local
// users' changes to other servers, until ctx ends; the returned channel closes then.
func (p *Process) runPresence(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Presence.Run(ctx, time.Second, p.sendPresence)
	}()
	return done
}

// sendPresence hands local users' presence changes to the federation sender, tenant by
// tenant. A tenant no longer loaded here is skipped: presence is best effort.
func (p *Process) sendPresence(ctx context.Context, updates []presence.Update) {
	for len(updates) > 0 {
		id := updates[0].TenantID
		n := 1
		for n < len(updates) && updates[n].TenantID == id {
			n++
		}
		batch := updates[:n]
		updates = updates[n:]
		t := p.Shard.Loaded(id)
		if t == nil {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := p.Federation.SendPresence(tctx, t, batch); err != nil {
			p.log.WarnContext(ctx, "presence not queued for other servers", "tenant", id, "err", err)
		}
		cancel()
	}
}

// presenceOnJoin sends presence to servers that just came to share a room: a remote user's
// join sends every local user's presence (not offline) again, a local user's join sends
// theirs.
func (p *Process) presenceOnJoin(ev rooms.Persisted) {
	if ev.Event == nil || ev.Event.Type() != spec.MRoomMember || ev.Event.StateKey() == nil {
		return
	}
	if m, err := ev.Event.Membership(); err != nil || m != spec.Join {
		return
	}
	t := p.Shard.Loaded(ev.TenantID)
	if t == nil {
		return
	}
	user, err := spec.NewUserID(*ev.Event.StateKey(), true)
	if err != nil {
		return
	}
	if user.Domain() == t.ServerName {
		p.Presence.Resend(ev.TenantID, user.String(), 0)
		return
	}
	// The joining server stores the room once its join is accepted here: tell it a little
	// later, and once more in case it was slow.
	p.Presence.Resend(ev.TenantID, "", 2*time.Second)
	p.Presence.Resend(ev.TenantID, "", 10*time.Second)
}
