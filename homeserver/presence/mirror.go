package presence

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
)

// Mirror copies presence into Redis, one hash per tenant (user -> JSON) whose expiry is
// renewed on every write, so the shard that next holds the tenant starts from it. Redis is
// ephemeral: errors are counted and logged at debug level, never returned.
type Mirror struct {
	rdb      *redis.Client
	log      *slog.Logger
	failures prometheus.Counter
	timeout  time.Duration
}

// NewMirror returns a mirror on rdb; a nil rdb returns nil (no mirror).
func NewMirror(rdb *redis.Client, log *slog.Logger, reg prometheus.Registerer) *Mirror {
	if rdb == nil {
		return nil
	}
	return &Mirror{rdb: rdb, log: log, timeout: 500 * time.Millisecond,
		failures: promauto.With(reg).NewCounter(prometheus.CounterOpts{Name: "atoll_homeserver_presence_redis_errors_total",
			Help: "Presence mirror reads and writes that could not reach Redis (presence stayed in memory)."})}
}

func mirrorKey(tenantID string) string { return "atoll:presence:" + tenantID }

type saved struct {
	Presence        string `json:"p"`
	StatusMsg       string `json:"m,omitempty"`
	LastActive      int64  `json:"a,omitempty"` // unix ms
	CurrentlyActive bool   `json:"c,omitempty"`
	Remote          bool   `json:"r,omitempty"`
	Updated         int64  `json:"u"` // unix ms
}

// loaded is a user's presence read back from the mirror.
type loaded struct {
	Status    Status
	Remote    bool
	UpdatedAt time.Time
}

func (m *Mirror) save(ctx context.Context, updates []Update, ttl time.Duration) {
	if m == nil || len(updates) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	byTenant := map[string][]any{}
	for _, u := range updates {
		s := saved{Presence: u.Status.Presence, StatusMsg: u.Status.StatusMsg, CurrentlyActive: u.Status.CurrentlyActive,
			Remote: u.Remote, Updated: u.At.UnixMilli()}
		if !u.Status.LastActive.IsZero() {
			s.LastActive = u.Status.LastActive.UnixMilli()
		}
		b, _ := json.Marshal(s)
		byTenant[u.TenantID] = append(byTenant[u.TenantID], u.Status.UserID, string(b))
	}
	pipe := m.rdb.Pipeline()
	for id, fields := range byTenant {
		pipe.HSet(ctx, mirrorKey(id), fields...)
		pipe.PExpire(ctx, mirrorKey(id), ttl)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		m.failures.Inc()
		m.log.DebugContext(ctx, "presence mirror write failed", "err", err)
	}
}

// load reads a tenant's presence; offline entries unchanged for forget are dropped.
func (m *Mirror) load(ctx context.Context, tenantID string, forget time.Duration) []loaded {
	if m == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	res, err := m.rdb.HGetAll(ctx, mirrorKey(tenantID)).Result()
	if err != nil {
		m.failures.Inc()
		m.log.DebugContext(ctx, "presence mirror read failed", "tenant", tenantID, "err", err)
		return nil
	}
	out := make([]loaded, 0, len(res))
	var stale []string
	for user, v := range res {
		var s saved
		if json.Unmarshal([]byte(v), &s) != nil || !Valid(s.Presence) {
			stale = append(stale, user)
			continue
		}
		updated := time.UnixMilli(s.Updated)
		if s.Presence == Offline && time.Since(updated) > forget {
			stale = append(stale, user)
			continue
		}
		st := Status{UserID: user, Presence: s.Presence, StatusMsg: s.StatusMsg, CurrentlyActive: s.CurrentlyActive}
		if s.LastActive > 0 {
			st.LastActive = time.UnixMilli(s.LastActive)
		}
		out = append(out, loaded{Status: st, Remote: s.Remote, UpdatedAt: updated})
	}
	if len(stale) > 0 {
		_ = m.rdb.HDel(ctx, mirrorKey(tenantID), stale...).Err()
	}
	return out
}
