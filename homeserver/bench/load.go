package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// LoadConfig is a light chat load: in each tenant, the first user sends to the group room
// every MinInterval..MaxInterval while the four others long-poll /sync.
type LoadConfig struct {
	Tenants                  []*Tenant
	Duration                 time.Duration // how long senders send
	MinInterval, MaxInterval time.Duration
	SyncTimeout              time.Duration // the long-poll's timeout parameter
	Grace                    time.Duration // how long receivers keep polling after the last send
}

// LoadResult is what RunLoad measured. Send is the PUT /send round trip; Wake is, per message
// and receiver, from the start of the send until the receiver's long-poll returned with it.
type LoadResult struct {
	Send, Wake          Latencies
	Sent, SendErrors    int64
	Expected, Delivered int64
	Syncs, SyncErrors   int64
	FirstErr            error
}

const syncFilter = `{"room":{"timeline":{"limit":50}},"presence":{"types":[]},"account_data":{"types":[]}}`

type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					Content struct {
						ID string `json:"atoll_bench_id"`
					} `json:"content"`
				} `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

// RunLoad runs the load and returns when every sender and receiver has stopped.
func RunLoad(ctx context.Context, h *HTTP, cfg LoadConfig) (*LoadResult, error) {
	res := &LoadResult{}
	var sent sync.Map // atoll_bench_id -> time.Time the send started
	var sends, sendErrs, delivered, syncs, syncErrs atomic.Int64
	var errOnce sync.Once
	noteErr := func(err error) { errOnce.Do(func() { res.FirstErr = err }) }
	filter := url.QueryEscape(syncFilter)

	// Receivers: an initial sync each, then long-polls until recvCtx ends.
	recvCtx, stopRecv := context.WithCancel(ctx)
	defer stopRecv()
	var recv sync.WaitGroup
	ready := make(chan error, len(cfg.Tenants)*UsersPerTenant)
	for _, t := range cfg.Tenants {
		for _, u := range t.Users[1:] {
			recv.Go(func() {
				var r syncResponse
				if err := h.Client(recvCtx, u, "GET", "/_matrix/client/v3/sync?timeout=0&filter="+filter, nil, &r); err != nil {
					ready <- fmt.Errorf("initial sync of %s: %w", u.UserID, err)
					return
				}
				ready <- nil
				since := r.NextBatch
				seen := map[string]bool{}
				for recvCtx.Err() == nil {
					var r syncResponse
					err := h.Client(recvCtx, u, "GET", fmt.Sprintf("/_matrix/client/v3/sync?since=%s&timeout=%d&filter=%s",
						url.QueryEscape(since), cfg.SyncTimeout.Milliseconds(), filter), nil, &r)
					now := time.Now()
					if err != nil {
						if recvCtx.Err() == nil {
							syncErrs.Add(1)
							noteErr(err)
							time.Sleep(100 * time.Millisecond)
						}
						continue
					}
					syncs.Add(1)
					since = r.NextBatch
					for _, jr := range r.Rooms.Join {
						for _, ev := range jr.Timeline.Events {
							id := ev.Content.ID
							if id == "" || seen[id] {
								continue
							}
							if v, ok := sent.Load(id); ok {
								seen[id] = true
								delivered.Add(1)
								res.Wake.Add(now.Sub(v.(time.Time)))
							}
						}
					}
				}
			})
		}
	}
	for range len(cfg.Tenants) * (UsersPerTenant - 1) {
		if err := <-ready; err != nil {
			stopRecv()
			recv.Wait()
			return nil, err
		}
	}

	// Senders: staggered, one per tenant, until the duration ends.
	sendCtx, stopSend := context.WithTimeout(ctx, cfg.Duration)
	defer stopSend()
	var send sync.WaitGroup
	for _, t := range cfg.Tenants {
		send.Go(func() {
			u := t.Users[0]
			wait := time.Duration(rand.Int64N(int64(cfg.MaxInterval)))
			for seq := 0; ; seq++ {
				select {
				case <-sendCtx.Done():
					return
				case <-time.After(wait):
				}
				wait = cfg.MinInterval + time.Duration(rand.Int64N(int64(cfg.MaxInterval-cfg.MinInterval)+1))
				id := fmt.Sprintf("%s-%d", t.ID, seq)
				start := time.Now()
				sent.Store(id, start)
				// A send in flight when the duration ends still completes.
				err := h.Client(context.WithoutCancel(sendCtx), u, "PUT",
					"/_matrix/client/v3/rooms/"+url.PathEscape(t.GroupRoom)+"/send/m.room.message/"+id,
					map[string]any{"msgtype": "m.text", "body": "bench message " + id, "atoll_bench_id": id}, nil)
				if err != nil {
					sendErrs.Add(1)
					noteErr(err)
					continue
				}
				sends.Add(1)
				res.Send.Add(time.Since(start))
			}
		})
	}
	send.Wait()
	select {
	case <-time.After(cfg.Grace):
	case <-ctx.Done():
	}
	stopRecv()
	recv.Wait()
	res.Sent, res.SendErrors = sends.Load(), sendErrs.Load()
	res.Expected = res.Sent * (UsersPerTenant - 1)
	res.Delivered = delivered.Load()
	res.Syncs, res.SyncErrors = syncs.Load(), syncErrs.Load()
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return res, err
	}
	return res, nil
}
