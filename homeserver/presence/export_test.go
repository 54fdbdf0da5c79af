package presence

import "time"

// SetNow replaces the tracker's clock.
func (t *Tracker) SetNow(now func() time.Time) {
	t.mu.Lock()
	t.now = now
	t.mu.Unlock()
}
