package near

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// Options bound one Cache. Exactly one of MaxEntries and MaxBytes is set.
type Options struct {
	// MaxEntries bounds the number of entries.
	MaxEntries int
	// MaxBytes bounds the sum of the sizes the caller gives Store (the entry's bytes
	// and its key, as the caller counts them).
	MaxBytes int64
}

// Cache is one model's share of a Tier: entries of type V by Redis key. It is safe
// for concurrent use.
type Cache[V any] struct {
	tier *Tier
	c    *otter.Cache[string, item[V]]

	hits, misses, evictions atomic.Uint64
}

type item[V any] struct {
	gen  uint64
	ttl  time.Duration
	size uint32
	val  V
}

// New returns a Cache in t bounded by o.
func New[V any](t *Tier, o Options) (*Cache[V], error) {
	if (o.MaxEntries > 0) == (o.MaxBytes > 0) || o.MaxEntries < 0 || o.MaxBytes < 0 {
		return nil, errors.New("near: set one of MaxEntries and MaxBytes, positive")
	}
	c := &Cache[V]{tier: t}
	opts := &otter.Options[string, item[V]]{
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, item[V]]) time.Duration { return e.Value.ttl }),
		OnDeletion: func(e otter.DeletionEvent[string, item[V]]) {
			if e.Cause == otter.CauseOverflow {
				c.evictions.Add(1)
			}
		},
	}
	if o.MaxEntries > 0 {
		opts.MaximumSize = o.MaxEntries
	} else {
		opts.MaximumWeight = uint64(o.MaxBytes)
		opts.Weigher = func(_ string, v item[V]) uint32 { return v.size }
	}
	oc, err := otter.New(opts)
	if err != nil {
		return nil, fmt.Errorf("near: %w", err)
	}
	c.c = oc
	t.add(c)
	return c, nil
}

// Get returns the entry stored under key, if the tier is up and it was stored in the
// tier's current generation.
func (c *Cache[V]) Get(key string) (V, bool) {
	it, ok := c.c.GetIfPresent(key)
	if !ok || it.gen != c.tier.gen.Load() {
		c.misses.Add(1)
		var zero V
		return zero, false
	}
	c.hits.Add(1)
	return it.val, true
}

// Store keeps v under key for at most ttl, if nothing voided tk since it was taken
// (an invalidation or a local write of a key of its stripe, Down, Flush) and the tier
// is up. size counts toward MaxBytes. It reports whether v was stored.
func (c *Cache[V]) Store(tk Ticket, key string, v V, size int, ttl time.Duration) bool {
	if tk.gen&1 == 0 || ttl <= 0 {
		return false
	}
	s := &c.tier.stripes[tk.stripe]
	s.mu.Lock()
	defer s.mu.Unlock()
	// Under the stripe's lock no invalidation of key runs; a Down or Flush moving the
	// generation after this check leaves the entry in a generation never served.
	if s.n.Load() != tk.n || c.tier.gen.Load() != tk.gen {
		return false
	}
	c.c.Set(key, item[V]{gen: tk.gen, ttl: ttl, size: uint32(min(size, math.MaxUint32)), val: v})
	return true
}

func (c *Cache[V]) drop(key string) { c.c.Invalidate(key) }

func (c *Cache[V]) reclaim() {
	gen := c.tier.gen.Load()
	for k, it := range c.c.All() {
		if it.gen != gen {
			c.c.Invalidate(k)
		}
	}
}

// Close stops the cache's clean-up goroutine (otter's, for expiry). The cache must
// not be used after.
func (c *Cache[V]) Close() { c.c.StopAllGoroutines() }

// CacheStats are one Cache's counters.
type CacheStats struct {
	Hits      uint64 // Get found a servable entry
	Misses    uint64 // Get found none
	Evictions uint64 // entries evicted by the bound
}

// Stats returns the cache's counters.
func (c *Cache[V]) Stats() CacheStats {
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Evictions: c.evictions.Load()}
}
