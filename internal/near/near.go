// Package near is the in-process tier of the cache: a bounded map from a Redis key to
// what this process last read there, in front of Redis, kept coherent by Redis itself.
// It knows nothing of Redis or GORM: the caller (package readthrough, with the tracker
// of internal/store) tells it which keys changed and when tracking went down or came
// back up, and fences its own fills with tickets.
//
// # Coherence
//
// An entry may be served only while the tier is up: a tracking connection is
// subscribed to Redis' invalidation messages for every key it could hold. Three
// mechanisms keep it from serving a row older than the last invalidation it received
// or could have missed:
//
//   - Generations. The tier's generation is odd while tracking is up and even while
//     it is down. Down, Up and Flush each move it on; every entry carries the
//     generation it was stored under and is served only while the tier is still in
//     it. So a disconnect (when messages may have been lost) or a FLUSHDB empties the
//     tier at once, whatever its size, without walking it; the entries are reclaimed
//     in the background (Flush) or by eviction.
//   - Tickets (fill fencing). A reader takes a Ticket for a key before it sends its
//     Redis GET and stores the reply only with it. Keys hash to stripes, each a mutex
//     and a counter; an invalidation of a key bumps its stripe's counter and deletes
//     the key under the stripe's lock, and Store checks, under the same lock, that
//     neither the counter nor the generation moved since the ticket was taken. So a
//     reply that Redis sent before a change whose invalidation was received in the
//     meantime is never stored: the race of issue 14, where the GET's reply and the
//     invalidation of the same key travel on two connections.
//   - Bounds. Entries live no longer than the Redis entry they copy (the caller passes
//     its remaining TTL), and the tier holds at most MaxEntries entries or MaxBytes
//     bytes per Cache.
//
// A stripe shared by unrelated keys only costs a refused store now and then.
//
// # Library
//
// Entries are held in otter v2 (github.com/maypok86/otter/v2): on this project's
// benchmark (integration/near, BenchmarkNearLibrary and TestNearLibraryHitRatio; see
// docs/BENCHMARKS.md) it answers a hit in about 32 ns against ristretto v2's 55, both
// without allocating, and keeps a hit ratio of 0.78 against ristretto's 0.46 under a
// Zipf(1.01) load over ten times its capacity. Its writes are synchronous, which the
// fence needs (ristretto buffers sets and may apply one after a later delete, and
// drops sets under contention), and it adds no module to the library's graph.
package near

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// stripes is the number of fence stripes; a power of two.
const stripes = 1024

type stripe struct {
	mu sync.Mutex
	n  atomic.Uint64 // changed under mu; read without it by Ticket
	_  [48]byte      // one cache line each: invalidations of neighbours do not contend
}

// Ticket is what a reader holds from before its Redis read until it stores the reply:
// the tier's generation and the key's stripe counter at that moment.
type Ticket struct {
	gen    uint64
	n      uint64
	stripe uint32
}

// Tier is the state every Cache of one Redis shares: the generation, the fence
// stripes and the counters of what tracking reported. It is safe for concurrent use.
type Tier struct {
	seed    maphash.Seed
	gen     atomic.Uint64 // odd: up
	mu      sync.Mutex    // serialises Up, Down and Flush, and the list of caches
	caches  atomic.Pointer[[]dropper]
	stripes [stripes]stripe

	invalidations atomic.Uint64
	flushes       atomic.Uint64
}

// dropper is a Cache of any value type.
type dropper interface {
	drop(key string)
	reclaim()
}

// NewTier returns a tier that is down: nothing is stored or served until Up.
func NewTier() *Tier {
	t := &Tier{seed: maphash.MakeSeed()}
	t.caches.Store(&[]dropper{})
	return t
}

func (t *Tier) add(c dropper) {
	t.mu.Lock()
	defer t.mu.Unlock()
	list := append(append([]dropper(nil), *t.caches.Load()...), c)
	t.caches.Store(&list)
}

// IsUp reports whether tracking is up, so that entries may be stored and served.
func (t *Tier) IsUp() bool { return t.gen.Load()&1 == 1 }

// Up records that tracking is established: every change to a key from now on will be
// reported by Invalidate (or a Down). Entries stored before are not served again.
func (t *Tier) Up() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gen.Load()&1 == 0 {
		t.gen.Add(1)
	}
}

// Down records that tracking is lost (the connection failed, was killed, Redis
// restarted or failed over: messages may have been lost). The tier is empty and
// bypassed until Up.
func (t *Tier) Down() {
	t.mu.Lock()
	if t.gen.Load()&1 == 1 {
		t.gen.Add(1)
		t.flushes.Add(1)
	}
	t.mu.Unlock()
	t.reclaim()
}

// Flush empties the tier and keeps it up: Redis reported a FLUSHDB or FLUSHALL.
func (t *Tier) Flush() {
	t.mu.Lock()
	t.gen.Add(2)
	t.flushes.Add(1)
	t.mu.Unlock()
	t.reclaim()
}

// reclaim frees the memory of entries of older generations, which are never served.
func (t *Tier) reclaim() {
	for _, c := range *t.caches.Load() {
		c.reclaim()
	}
}

// Invalidate drops keys, reported changed by Redis, from every Cache of the tier, and
// voids the tickets taken for them before now.
func (t *Tier) Invalidate(keys ...string) {
	t.invalidations.Add(uint64(len(keys)))
	for _, k := range keys {
		t.Drop(k)
	}
}

// Drop drops key from every Cache of the tier and voids the tickets taken for it
// before now: a write through this process, whose own readers must see it at once.
func (t *Tier) Drop(key string) {
	s := &t.stripes[t.stripeOf(key)]
	caches := *t.caches.Load()
	s.mu.Lock()
	s.n.Add(1)
	for _, c := range caches {
		c.drop(key)
	}
	s.mu.Unlock()
}

func (t *Tier) stripeOf(key string) uint32 {
	return uint32(maphash.String(t.seed, key) & (stripes - 1))
}

// Ticket returns the ticket of key; take it before the Redis read whose reply Store
// may keep.
func (t *Tier) Ticket(key string) Ticket {
	i := t.stripeOf(key)
	return Ticket{n: t.stripes[i].n.Load(), gen: t.gen.Load(), stripe: i}
}

// Stats are the tier's counters.
type Stats struct {
	Invalidations uint64 // keys Redis reported changed (each key of a message counts)
	Flushes       uint64 // times the tier was emptied: tracking lost, or FLUSHDB/FLUSHALL
}

// Stats returns the tier's counters.
func (t *Tier) Stats() Stats {
	return Stats{Invalidations: t.invalidations.Load(), Flushes: t.flushes.Load()}
}
