package bench

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// UsersPerTenant is the number of users each bench tenant gets.
const UsersPerTenant = 5

// Tenant is a bench tenant: five users, a DM between the first two and a group room all
// five have joined.
type Tenant struct {
	ID         string
	ServerName string
	Users      []*User
	DMRoom     string
	GroupRoom  string
}

// PopulateStats times each step of Populate.
type PopulateStats struct {
	CreateTenant, Register, CreateRoom, Join Latencies
	Wall                                     time.Duration
}

// Populate creates n tenants through the admin API and, in each, registers five users with
// passwords over /register (bcrypt at the server's cost), creates a DM (users 0 and 1) and a
// group room (all five), with workers tenants in flight at once. It stops at the first error.
func Populate(ctx context.Context, h *HTTP, n, workers int, stats *PopulateStats, progress func(done int)) ([]*Tenant, error) {
	start := time.Now()
	defer func() { stats.Wall = time.Since(start) }()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	tenants := make([]*Tenant, n)
	next := atomic.Int64{}
	done := atomic.Int64{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				t, err := populateTenant(ctx, h, i, stats)
				if err != nil {
					cancel(fmt.Errorf("tenant %d: %w", i, err))
					return
				}
				tenants[i] = t
				if d := int(done.Add(1)); progress != nil {
					progress(d)
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return tenants, nil
}

func timed(l *Latencies, fn func() error) error {
	t0 := time.Now()
	err := fn()
	if err == nil {
		l.Add(time.Since(t0))
	}
	return err
}

func populateTenant(ctx context.Context, h *HTTP, i int, stats *PopulateStats) (*Tenant, error) {
	t := &Tenant{ID: fmt.Sprintf("b%05d", i), ServerName: fmt.Sprintf("b%05d.bench.test", i)}
	err := timed(&stats.CreateTenant, func() error {
		return h.Admin(ctx, "POST", "/_atoll/admin/v1/tenants", map[string]any{
			"id": t.ID, "server_name": t.ServerName, "settings": map[string]any{"registration": "open"},
		}, nil)
	})
	if err != nil {
		return nil, fmt.Errorf("create tenant: %w", err)
	}
	for u := range UsersPerTenant {
		var resp struct {
			UserID      string `json:"user_id"`
			AccessToken string `json:"access_token"`
		}
		err := timed(&stats.Register, func() error {
			return h.Do(ctx, h.ClientURL, t.ServerName, "", "POST", "/_matrix/client/v3/register", map[string]any{
				"username": fmt.Sprintf("user%d", u), "password": fmt.Sprintf("bench-password-%d-%d", i, u),
				"auth": map[string]any{"type": "m.login.dummy"},
			}, &resp)
		})
		if err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
		t.Users = append(t.Users, &User{Host: t.ServerName, UserID: resp.UserID, Token: resp.AccessToken})
	}
	createRoom := func(body map[string]any) (string, error) {
		var resp struct {
			RoomID string `json:"room_id"`
		}
		err := timed(&stats.CreateRoom, func() error {
			return h.Client(ctx, t.Users[0], "POST", "/_matrix/client/v3/createRoom", body, &resp)
		})
		return resp.RoomID, err
	}
	join := func(u *User, room string) error {
		return timed(&stats.Join, func() error {
			return h.Client(ctx, u, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}, nil)
		})
	}
	if t.DMRoom, err = createRoom(map[string]any{
		"preset": "trusted_private_chat", "is_direct": true, "invite": []string{t.Users[1].UserID},
	}); err != nil {
		return nil, fmt.Errorf("create DM: %w", err)
	}
	if err := join(t.Users[1], t.DMRoom); err != nil {
		return nil, fmt.Errorf("join DM: %w", err)
	}
	var invite []string
	for _, u := range t.Users[1:] {
		invite = append(invite, u.UserID)
	}
	if t.GroupRoom, err = createRoom(map[string]any{"preset": "private_chat", "name": "group", "invite": invite}); err != nil {
		return nil, fmt.Errorf("create group room: %w", err)
	}
	for _, u := range t.Users[1:] {
		if err := join(u, t.GroupRoom); err != nil {
			return nil, fmt.Errorf("join group room: %w", err)
		}
	}
	return t, nil
}

// Touch makes every tenant loaded again, as connected clients would: one initial /sync of
// each tenant's first user, workers at a time.
func Touch(ctx context.Context, h *HTTP, tenants []*Tenant, workers int, lat *Latencies) error {
	ch := make(chan *Tenant)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for t := range ch {
				if err := timed(lat, func() error {
					return h.Client(ctx, t.Users[0], "GET", "/_matrix/client/v3/sync?timeout=0", nil, nil)
				}); err != nil {
					errc <- fmt.Errorf("initial sync of %s: %w", t.ID, err)
					return
				}
			}
		})
	}
	var err error
feed:
	for _, t := range tenants {
		select {
		case ch <- t:
		case err = <-errc:
			break feed
		}
	}
	close(ch)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	return err
}
