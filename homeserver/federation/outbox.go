package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/atoll-matrix/atoll/homeserver/rooms"
	"github.com/atoll-matrix/atoll/internal/pgdb"
)

// Limits of one transaction, from the spec.
const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
)

// roomServers lists the servers with joined members in a room, from its current state.
func roomServers(ctx context.Context, q pgdb.DBTX, roomID string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT substr(state_key, strpos(state_key, ':') + 1) FROM current_state
		WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("servers in room %s: %w", roomID, err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Enqueue queues a local event for every other server in its room, in the transaction that
// stores the event: the room engine's in-transaction hook.
func (s *Server) Enqueue(ctx context.Context, q pgdb.DBTX, h *rooms.Host, ev gomatrixserverlib.PDU) error {
	servers, err := roomServers(ctx, q, ev.RoomID().String())
	if err != nil {
		return err
	}
	set := map[string]bool{}
	for _, srv := range servers {
		set[srv] = true
	}
	// A membership change of another server's user reaches that server even when the user
	// is not (or no longer) joined: kicks, bans, invites already accepted. An invite itself
	// went to the invitee's server through /invite; sent again by /send to a server with no
	// member in the room, it is a PDU of a room that server is not in (Dendrite then fetches
	// missing events, rejects them and cannot use the room after the invitee joins).
	if m, _ := ev.Membership(); ev.Type() == spec.MRoomMember && ev.StateKey() != nil && m != spec.Invite {
		if _, srv, ok := strings.Cut(*ev.StateKey(), ":"); ok {
			set[srv] = true
		}
	}
	delete(set, string(h.ServerName))
	if len(set) == 0 {
		return nil
	}
	now := time.Now().UnixMilli()
	for dest := range set {
		if _, err := q.Exec(ctx, `INSERT INTO federation_outbox (destination, kind, payload, created_ts) VALUES ($1, 'pdu', $2, $3)`,
			dest, string(ev.JSON()), now); err != nil {
			return fmt.Errorf("queue event for %s: %w", dest, err)
		}
	}
	_, err = q.Exec(ctx, `INSERT INTO atoll_control.outbox_tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING`, h.TenantID)
	return err
}

// EnqueueEDU queues an ephemeral event for the given servers.
func (s *Server) EnqueueEDU(ctx context.Context, h *rooms.Host, destinations []string, edu gomatrixserverlib.EDU) error {
	b, err := json.Marshal(edu)
	if err != nil {
		return err
	}
	err = h.Store.Tx(ctx, func(q pgdb.DBTX) error {
		n := 0
		for _, dest := range destinations {
			if dest == string(h.ServerName) {
				continue
			}
			if _, err := q.Exec(ctx, `INSERT INTO federation_outbox (destination, kind, payload, created_ts) VALUES ($1, 'edu', $2, $3)`,
				dest, string(b), time.Now().UnixMilli()); err != nil {
				return err
			}
			n++
		}
		if n == 0 {
			return nil
		}
		_, err := q.Exec(ctx, `INSERT INTO atoll_control.outbox_tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING`, h.TenantID)
		return err
	})
	if err == nil {
		s.Wake()
	}
	return err
}

// HostLoader loads a tenant this shard may serve, by ID.
type HostLoader func(ctx context.Context, tenantID string) (*rooms.Host, error)

// Sender delivers queued PDUs and EDUs: per destination in order, as transactions, with
// exponential backoff for destinations that fail. The queue lives in PostgreSQL, so nothing
// is lost across restarts or outages; a delivered transaction is deleted.
type Sender struct {
	s      *Server
	pool   *pgxpool.Pool
	shard  string
	load   HostLoader
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	active map[string]bool // tenant|destination being sent now
	// MaxBackoff caps the wait before retrying a failing destination.
	MaxBackoff time.Duration
}

// NewSender returns a sender for the tenants whose leases shard holds.
func (s *Server) NewSender(pool *pgxpool.Pool, shard string, load HostLoader) *Sender {
	snd := &Sender{s: s, pool: pool, shard: shard, load: load, wake: make(chan struct{}, 1), stop: make(chan struct{}),
		done: make(chan struct{}), active: map[string]bool{}, MaxBackoff: time.Hour}
	s.sender = snd
	return snd
}

// Wake asks the sender to look for queued work now.
func (s *Server) Wake() {
	if s.sender == nil {
		return
	}
	select {
	case s.sender.wake <- struct{}{}:
	default:
	}
}

// Start runs the sender until Stop.
func (snd *Sender) Start(ctx context.Context) {
	go func() {
		defer close(snd.done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-snd.stop:
				return
			case <-ctx.Done():
				return
			case <-snd.wake:
			case <-tick.C:
			}
			snd.pass(ctx)
		}
	}()
}

// Stop ends the sender and waits for in-flight transactions.
func (snd *Sender) Stop() {
	close(snd.stop)
	<-snd.done
}

// pass sends what is due for every tenant with queued items this shard owns or nobody owns.
func (snd *Sender) pass(ctx context.Context) {
	rows, err := snd.pool.Query(ctx, `SELECT o.tenant_id FROM atoll_control.outbox_tenants o JOIN atoll_control.tenants t ON t.id = o.tenant_id
		WHERE t.status = 'active' AND (t.owner_shard = $1 OR t.owner_shard IS NULL OR t.lease_until < now())`, snd.shard)
	if err != nil {
		snd.s.log.WarnContext(ctx, "list outbox tenants failed", "err", err)
		return
	}
	tenants, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	depth := map[string]float64{"local": 0, "remote": 0}
	defer func() {
		for class, n := range depth {
			snd.s.fed.queueDepth.WithLabelValues(class).Set(n)
		}
	}()
	for _, id := range tenants {
		h, err := snd.load(ctx, id)
		if err != nil {
			continue // owned elsewhere now, or suspended
		}
		_ = h.Store.Tx(ctx, func(q pgdb.DBTX) error {
			rows, err := q.Query(ctx, `SELECT destination, count(*) FROM federation_outbox GROUP BY destination`)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var dest string
				var n float64
				if err := rows.Scan(&dest, &n); err != nil {
					return err
				}
				depth[snd.s.destinationClass(ctx, dest)] += n
			}
			return rows.Err()
		})
		var dests []string
		err = h.Store.Tx(ctx, func(q pgdb.DBTX) error {
			rows, err := q.Query(ctx, `SELECT DISTINCT o.destination FROM federation_outbox o
				LEFT JOIN federation_destinations d ON d.destination = o.destination
				WHERE coalesce(d.retry_at, 0) <= $1`, time.Now().UnixMilli())
			if err != nil {
				return err
			}
			dests, err = pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			if len(dests) == 0 {
				var pending bool
				if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM federation_outbox)`).Scan(&pending); err != nil {
					return err
				}
				if !pending {
					_, err = q.Exec(ctx, `DELETE FROM atoll_control.outbox_tenants WHERE tenant_id = $1`, id)
				}
			}
			return err
		})
		if err != nil {
			snd.s.log.WarnContext(ctx, "read outbox failed", "tenant", id, "err", err)
			continue
		}
		for _, dest := range dests {
			key := id + "|" + dest
			snd.mu.Lock()
			busy := snd.active[key]
			snd.active[key] = true
			snd.mu.Unlock()
			if busy {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() {
					<-sem
					snd.mu.Lock()
					delete(snd.active, key)
					snd.mu.Unlock()
					wg.Done()
				}()
				snd.drain(ctx, h, dest)
			}()
		}
	}
	wg.Wait()
}

type outItem struct {
	id      int64
	kind    string
	payload json.RawMessage
	created int64
}

// drain sends transactions to one destination until its queue is empty or it fails.
func (snd *Sender) drain(ctx context.Context, h *rooms.Host, dest string) {
	client := snd.s.Client(h)
	class := snd.s.destinationClass(ctx, dest)
	for {
		var items []outItem
		err := h.Store.Tx(ctx, func(q pgdb.DBTX) error {
			rows, err := q.Query(ctx, `(SELECT id, kind, payload, created_ts FROM federation_outbox WHERE destination = $1 AND kind = 'pdu' ORDER BY id LIMIT $2)
				UNION ALL (SELECT id, kind, payload, created_ts FROM federation_outbox WHERE destination = $1 AND kind = 'edu' ORDER BY id LIMIT $3)
				ORDER BY id`, dest, maxTxnPDUs, maxTxnEDUs)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var it outItem
				var b []byte
				if err := rows.Scan(&it.id, &it.kind, &b, &it.created); err != nil {
					return err
				}
				it.payload = b
				items = append(items, it)
			}
			return rows.Err()
		})
		if err != nil || len(items) == 0 {
			return
		}
		snd.s.fed.queueAge.WithLabelValues(class).Set(time.Since(time.UnixMilli(items[0].created)).Seconds())
		txn := gomatrixserverlib.Transaction{
			TransactionID:  gomatrixserverlib.TransactionID(fmt.Sprintf("%d-%d", items[0].id, items[len(items)-1].id)),
			Origin:         h.ServerName,
			Destination:    spec.ServerName(dest),
			OriginServerTS: spec.AsTimestamp(time.Now()),
			PDUs:           []json.RawMessage{},
			EDUs:           []gomatrixserverlib.EDU{},
		}
		ids := make([]int64, 0, len(items))
		for _, it := range items {
			ids = append(ids, it.id)
			if it.kind == "pdu" {
				txn.PDUs = append(txn.PDUs, it.payload)
			} else {
				var edu gomatrixserverlib.EDU
				if json.Unmarshal(it.payload, &edu) == nil {
					txn.EDUs = append(txn.EDUs, edu)
				}
			}
		}
		sendCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		_, err = client.SendTransaction(sendCtx, txn)
		cancel()
		if err != nil {
			snd.s.fed.txnsSent.WithLabelValues("failed", class).Inc()
			snd.backoff(ctx, h, dest, err)
			return
		}
		snd.s.fed.txnsSent.WithLabelValues("sent", class).Inc()
		err = h.Store.Tx(ctx, func(q pgdb.DBTX) error {
			if _, err := q.Exec(ctx, `DELETE FROM federation_outbox WHERE id = ANY($1)`, ids); err != nil {
				return err
			}
			_, err := q.Exec(ctx, `DELETE FROM federation_destinations WHERE destination = $1`, dest)
			return err
		})
		if err != nil {
			snd.s.log.WarnContext(ctx, "acknowledge transaction failed", "tenant", h.TenantID, "destination", dest, "err", err)
			return
		}
	}
}

func (snd *Sender) backoff(ctx context.Context, h *rooms.Host, dest string, cause error) {
	err := h.Store.Tx(ctx, func(q pgdb.DBTX) error {
		var failures int
		err := q.QueryRow(ctx, `INSERT INTO federation_destinations (destination, failures, retry_at, last_error) VALUES ($1, 1, 0, $2)
			ON CONFLICT (destination) DO UPDATE SET failures = federation_destinations.failures + 1, last_error = $2
			RETURNING failures`, dest, truncate(cause.Error(), 500)).Scan(&failures)
		if err != nil {
			return err
		}
		wait := time.Second << min(failures, 20)
		if wait > snd.MaxBackoff {
			wait = snd.MaxBackoff
		}
		_, err = q.Exec(ctx, `UPDATE federation_destinations SET retry_at = $2 WHERE destination = $1`, dest, time.Now().Add(wait).UnixMilli())
		return err
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		snd.s.log.WarnContext(ctx, "record delivery failure failed", "destination", dest, "err", err)
	}
	snd.s.log.WarnContext(ctx, "federation delivery failed", "tenant", h.TenantID, "destination", dest, "err", cause)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// destinationClass is "local" for a tenant of this installation, "remote" otherwise: the only
// label metrics carry for destinations, which are unbounded.
func (s *Server) destinationClass(ctx context.Context, dest string) string {
	if _, err := s.registry.ByHost(ctx, dest); err == nil {
		return "local"
	}
	return "remote"
}
