// Package dedup remembers which (app, pushkey, event) deliveries already
// happened, for a bounded time and in bounded memory, so a notification a
// homeserver retries does not ring the device twice.
package dedup

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// Key identifies one delivery; it is a hash so every entry has the same
// small size whatever the pushkey length.
type Key [sha256.Size]byte

// NewKey hashes the parts of a delivery identity.
func NewKey(appID, pushkey, eventID string) Key {
	h := sha256.New()
	for _, s := range []string{appID, pushkey, eventID} {
		var n [4]byte
		l := len(s)
		n[0], n[1], n[2], n[3] = byte(l>>24), byte(l>>16), byte(l>>8), byte(l)
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var k Key
	h.Sum(k[:0])
	return k
}

type entry struct {
	key     Key
	expires time.Time
	done    bool // delivered; false while a send is in flight
}

// Cache is a TTL set with a fixed capacity; the oldest entries are evicted
// first when it is full.
type Cache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu    sync.Mutex
	order *list.List // front: oldest
	items map[Key]*list.Element
}

// New returns a cache keeping entries for ttl, at most max of them.
func New(ttl time.Duration, max int, now func() time.Time) *Cache {
	if max < 1 {
		max = 1
	}
	if now == nil {
		now = time.Now
	}
	return &Cache{ttl: ttl, max: max, now: now, order: list.New(), items: make(map[Key]*list.Element)}
}

// Claim reserves k for a send. It returns false when k was delivered or is
// being sent within the TTL; the caller then must not send. After a true
// Claim the caller calls Done on success or Release on failure.
func (c *Cache) Claim(k Key) bool {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(now)
	if el, ok := c.items[k]; ok {
		if el.Value.(*entry).expires.After(now) {
			return false
		}
		c.removeLocked(el)
	}
	for c.order.Len() >= c.max {
		c.removeLocked(c.order.Front())
	}
	c.items[k] = c.order.PushBack(&entry{key: k, expires: now.Add(c.ttl)})
	return true
}

// Done records a successful delivery of k, restarting its TTL.
func (c *Cache) Done(k Key) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		e := el.Value.(*entry)
		e.done, e.expires = true, now.Add(c.ttl)
		c.order.MoveToBack(el)
	}
}

// Release forgets an in-flight claim after a failed send so a retry may send.
func (c *Cache) Release(k Key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok && !el.Value.(*entry).done {
		c.removeLocked(el)
	}
}

// Len returns the number of entries held.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

func (c *Cache) expireLocked(now time.Time) {
	for el := c.order.Front(); el != nil; el = c.order.Front() {
		if el.Value.(*entry).expires.After(now) {
			return
		}
		c.removeLocked(el)
	}
}

func (c *Cache) removeLocked(el *list.Element) {
	delete(c.items, el.Value.(*entry).key)
	c.order.Remove(el)
}
