package process

import (
	"context"
	"time"

	"github.com/atoll-matrix/atoll/homeserver/presence"
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
