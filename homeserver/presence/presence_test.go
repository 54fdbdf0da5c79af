package presence_test

import (
	"testing"
	"time"

	"github.com/atoll-matrix/atoll/homeserver/presence"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newTracker(t *testing.T) (*presence.Tracker, *clock, *int) {
	t.Helper()
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	n := 0
	tr := presence.New(presence.Config{SyncTimeout: 30 * time.Second, IdleTimeout: 5 * time.Minute, ActiveWindow: time.Minute,
		ForgetAfter: time.Hour, RemoteTimeout: 30 * time.Minute}, nil, func(string) { n++ })
	tr.SetNow(c.now)
	return tr, c, &n
}

func TestSyncIdleOffline(t *testing.T) {
	tr, c, notified := newTracker(t)
	const tn, alice = "t1", "@alice:a.test"
	done := tr.Syncing(tn, alice, "")
	if st := tr.Get(tn, alice); st.Presence != presence.Online || !st.CurrentlyActive {
		t.Fatalf("after sync: %+v", st)
	}
	if *notified != 1 {
		t.Fatalf("notified %d times", *notified)
	}
	s1 := tr.Serial()
	// Still syncing after the active window: no longer currently active.
	c.advance(2 * time.Minute)
	tr.Expire()
	if st := tr.Get(tn, alice); st.Presence != presence.Online || st.CurrentlyActive {
		t.Fatalf("after active window: %+v", st)
	}
	// Idle while syncing: unavailable.
	c.advance(4 * time.Minute)
	tr.Expire()
	if st := tr.Get(tn, alice); st.Presence != presence.Unavailable {
		t.Fatalf("after idle: %+v", st)
	}
	// Activity brings the user back.
	tr.Active(tn, alice)
	if st := tr.Get(tn, alice); st.Presence != presence.Online || !st.CurrentlyActive {
		t.Fatalf("after activity: %+v", st)
	}
	if got := tr.Since(tn, s1, tr.Serial(), false); len(got) != 1 || got[0].UserID != alice {
		t.Fatalf("Since = %+v", got)
	}
	// The sync ends and none follows: offline after the sync timeout.
	done()
	c.advance(20 * time.Second)
	tr.Expire()
	if st := tr.Get(tn, alice); st.Presence != presence.Online {
		t.Fatalf("before sync timeout: %+v", st)
	}
	c.advance(20 * time.Second)
	tr.Expire()
	if st := tr.Get(tn, alice); st.Presence != presence.Offline {
		t.Fatalf("after sync timeout: %+v", st)
	}
	// Offline users are forgotten after a while.
	c.advance(2 * time.Hour)
	tr.Expire()
	if got := tr.Since(tn, 0, tr.Serial(), false); len(got) != 0 {
		t.Fatalf("offline user kept: %+v", got)
	}
}

func TestSetPresenceAndSync(t *testing.T) {
	tr, _, _ := newTracker(t)
	const tn, bob = "t1", "@bob:a.test"
	tr.Set(tn, bob, presence.Unavailable, "in a meeting")
	// A sync with the default set_presence leaves an explicit unavailable alone.
	done := tr.Syncing(tn, bob, "")
	defer done()
	st := tr.Get(tn, bob)
	if st.Presence != presence.Unavailable || st.StatusMsg != "in a meeting" {
		t.Fatalf("got %+v", st)
	}
	tr.Set(tn, bob, presence.Offline, "")
	done2 := tr.Syncing(tn, bob, presence.Offline)
	done2()
	if st := tr.Get(tn, bob); st.Presence != presence.Offline {
		t.Fatalf("set_presence=offline changed presence: %+v", st)
	}
	done3 := tr.Syncing(tn, bob, presence.Unavailable)
	done3()
	if st := tr.Get(tn, bob); st.Presence != presence.Unavailable {
		t.Fatalf("set_presence=unavailable: %+v", st)
	}
	// Initial syncs list users not offline; a token from the future lists every user.
	if got := tr.Since(tn, 0, tr.Serial(), true); len(got) != 1 {
		t.Fatalf("initial = %+v", got)
	}
	if got := tr.Since(tn, tr.Serial()+10, tr.Serial(), false); len(got) != 1 {
		t.Fatalf("future token = %+v", got)
	}
	if got := tr.Since("other", 0, tr.Serial(), true); len(got) != 0 {
		t.Fatalf("other tenant sees %+v", got)
	}
}

func TestRemoteTimeoutAndOutbound(t *testing.T) {
	tr, c, _ := newTracker(t)
	const tn = "t1"
	tr.SetRemote(tn, presence.Status{UserID: "@carol:b.test", Presence: presence.Online, LastActive: c.now()})
	tr.Set(tn, "@alice:a.test", presence.Online, "")
	out := tr.TakeOutbound()
	if len(out) != 1 || out[0].Status.UserID != "@alice:a.test" {
		t.Fatalf("outbound = %+v (remote users are never sent on)", out)
	}
	if len(tr.TakeOutbound()) != 0 {
		t.Fatal("outbound not cleared")
	}
	c.advance(31 * time.Minute)
	tr.Expire()
	if st := tr.Get(tn, "@carol:b.test"); st.Presence != presence.Offline {
		t.Fatalf("remote user after timeout: %+v", st)
	}
}

func TestChangedAndResend(t *testing.T) {
	tr, c, _ := newTracker(t)
	tr.Set("t1", "@alice:a.test", presence.Online, "")
	tr.Set("t2", "@bob:b.test", presence.Offline, "")
	s := tr.Serial()
	tr.TakeOutbound()
	tr.Set("t2", "@bob:b.test", presence.Online, "")
	if tr.Changed("t1", s) {
		t.Fatal("t1 changed by t2's change")
	}
	if !tr.Changed("t2", s) || !tr.Changed("t1", tr.Serial()+1) {
		t.Fatal("Changed misses a change or a token from the future")
	}
	tr.TakeOutbound()
	tr.Resend("t1", "", 2*time.Second)
	tr.Expire()
	if out := tr.TakeOutbound(); len(out) != 0 {
		t.Fatalf("resent before due: %+v", out)
	}
	c.advance(3 * time.Second)
	tr.Expire()
	if out := tr.TakeOutbound(); len(out) != 1 || out[0].Status.UserID != "@alice:a.test" {
		t.Fatalf("resend = %+v", out)
	}
}
