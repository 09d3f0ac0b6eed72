package readthrough

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/pgcache/pgcache/internal/near"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/writepolicy"
)

// The near cache: an in-process tier in front of Redis (package internal/near), kept
// coherent by Redis' server-assisted client-side caching (store.Tracker): one tracking
// connection for a single Redis or a Sentinel client, one per master for a Cluster
// client, the tier up only while all of them are. Ring clients are refused.
//
// Reads. Get and GetMany look in the near tier first. On a miss they take a ticket for
// the key before their Redis GET, and store the entry Redis returned with it; the
// store is refused if an invalidation of the key arrived in between, so a reply older
// than a change this process has heard of never lands. Rows loaded from Postgres are
// not put in the near tier: the fill's own SET is reported back by Redis and would
// drop them; the next read finds them in Redis and keeps them.
//
// Writes through the repository drop the row from the near tier after they
// invalidated it in Redis, and before they return: a reader that took its ticket
// before the drop is refused, and one that took it after reads Redis after the
// invalidation. Other processes drop the row when Redis' message reaches them.
//
// Copies. A model whose fields hold no pointers, slices, maps or interfaces (strings
// and time.Time are fine: they are never changed in place) is kept as a row and
// copied by value on each hit, without decoding; any other model is kept as its entry
// and decoded on each hit, so that no two callers share a slice, a map or a pointee.

// NearOptions bound a model's near cache, an in-process tier in front of Redis. Set
// one of MaxEntries and MaxBytes to turn it on; the zero value leaves it off.
type NearOptions struct {
	// MaxEntries bounds the number of rows the model keeps in process.
	MaxEntries int
	// MaxBytes bounds the bytes of the entries the model keeps in process (each entry
	// counts its encoded size and its key; a model copied by value also holds its
	// decoded row, which is not counted).
	MaxBytes int64
}

func (o NearOptions) enabled() bool { return o.MaxEntries != 0 || o.MaxBytes != 0 }

// nearHealth bounds how long a silent tracking connection is trusted (see
// store.NewTracker).
const nearHealth = time.Second

// nearState is a Cache's near tier and the tracker that keeps it coherent, started by
// the first model registered with a near cache and stopped by Close.
type nearState struct {
	mu      sync.Mutex
	tier    *near.Tier
	cancel  context.CancelFunc
	done    chan struct{}
	closers []func()
	closed  bool
}

// nearTier returns the Cache's tier, starting its tracker on first use.
func (c *Cache) nearTier() (*near.Tier, error) {
	s := &c.near
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("%w: Register after Close", ErrConfig)
	}
	if s.tier != nil {
		return s.tier, nil
	}
	tier := near.NewTier()
	hooks := c.db.Statement.Context // test hooks only (testhooks.Near)
	if hooks == nil {
		hooks = context.Background()
	}
	tr, err := c.store.NewTracker(keys.Prefix(c.opts.Prefix), store.TrackingHandler{
		Up: tier.Up,
		Down: func(error) {
			if !testhooks.NearKeepOnDown(hooks) {
				tier.Down()
			}
		},
		Invalidate: func(ks []string) { tier.Invalidate(ks...) },
		Flush:      tier.Flush,
	}, nearHealth, c.log)
	if err != nil {
		return nil, fmt.Errorf("%w: near cache: %w", ErrConfig, err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(hooks)) // hooks: values only
	s.tier, s.cancel, s.done = tier, cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		_ = tr.Run(ctx) // returns nil once ctx ended; failures are logged and retried
	}()
	return tier, nil
}

// nearModel is a model's near cache.
type nearModel[T any] struct {
	tier  *near.Tier
	cache *near.Cache[*nearItem[T]]
	plain bool // copied by value on a hit (see plainType)
}

// nearItem is what the near tier holds for a row: the row itself, as Postgres holds
// it, for a plain model; its entry otherwise.
type nearItem[T any] struct {
	ok    bool // false: there is no such row
	row   T
	entry []byte
	// lookup marks a lookup's entry (see nearlookup.go): entry holds it, and ids the
	// primary keys it names.
	lookup bool
	ids    []any
}

// newNearModel returns the model's near cache, nil when it is off.
func newNearModel[T any](c *Cache, m *model, opts ModelOptions) (*nearModel[T], error) {
	o := opts.Near
	if !o.enabled() {
		return nil, nil
	}
	if o.MaxEntries < 0 || o.MaxBytes < 0 || (o.MaxEntries > 0 && o.MaxBytes > 0) {
		return nil, fmt.Errorf("%w: model %s: Near: set one of MaxEntries and MaxBytes, positive", ErrConfig, m.schema.Name)
	}
	if opts.WritePolicy == writepolicy.WriteBack {
		// Write-back promises that a write Redis acknowledged is seen by every reader
		// that begins after it, in every process; another process's near cache would
		// serve the older row until Redis' message reached it.
		return nil, fmt.Errorf("%w: model %s: a near cache cannot keep write-back's promise that every process reads an acknowledged write at once (other processes drop the row only when Redis' message reaches them): use Invalidate or WriteThrough, or no near cache",
			ErrConfig, m.schema.Name)
	}
	tier, err := c.nearTier()
	if err != nil {
		return nil, err
	}
	cache, err := near.New[*nearItem[T]](tier, near.Options{MaxEntries: o.MaxEntries, MaxBytes: o.MaxBytes})
	if err != nil {
		return nil, fmt.Errorf("%w: model %s: %w", ErrConfig, m.schema.Name, err)
	}
	c.near.mu.Lock()
	c.near.closers = append(c.near.closers, cache.Close)
	c.near.mu.Unlock()
	return &nearModel[T]{tier: tier, cache: cache, plain: plainType(reflect.TypeFor[T]())}, nil
}

var timeType = reflect.TypeFor[time.Time]()

// plainType reports whether a copy of a value of t by assignment shares nothing that
// a caller could change in place.
func plainType(t reflect.Type) bool {
	if t == timeType {
		return true // its *Location is never changed in place
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface, reflect.Chan, reflect.Func, reflect.UnsafePointer:
		return false
	case reflect.Array:
		return plainType(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !plainType(t.Field(i).Type) {
				return false
			}
		}
	}
	return true
}

// nearGet answers a read from the near tier; hit is false when it cannot (no near
// cache, tracking down, no entry).
func (r *Repository[T]) nearGet(ctx context.Context, k keys.Key) (row T, ok, hit bool) {
	if r.near == nil || r.inTx {
		return row, false, false
	}
	return r.nearGetOn(ctx, k)
}

// nearGetOn is nearGet with the near tier on; apart, so that a model without one does
// not pay for its row escaping to the heap.
func (r *Repository[T]) nearGetOn(ctx context.Context, k keys.Key) (row T, ok, hit bool) {
	it, found := r.near.cache.Get(k.Value())
	if !found || it.lookup {
		return row, false, false
	}
	if !it.ok {
		return row, false, true
	}
	if r.near.plain {
		row = it.row
	} else if err := r.decodeRow(ctx, it.entry[1:], &row); err != nil {
		return row, false, false // stored only once decoded: not expected
	}
	if !r.visible(ctx, &row) {
		var zero T
		return zero, false, true
	}
	return row, true, true
}

// nearTicket returns the ticket a read takes before its Redis GET (see near.Ticket).
func (r *Repository[T]) nearTicket(k keys.Key) near.Ticket {
	if r.near == nil {
		return near.Ticket{}
	}
	return r.near.tier.Ticket(k.Value())
}

// getEntry reads the row's entry from Redis, with its remaining TTL when the model
// has a near cache.
func (r *Repository[T]) getEntry(ctx context.Context, k keys.Key) ([]byte, time.Duration, bool, error) {
	if r.near == nil {
		entry, cached, err := r.store.Get(ctx, k)
		return entry, 0, cached, err
	}
	return r.store.GetWithTTL(ctx, k)
}

// nearStore keeps an entry read from Redis in the near tier, under the ticket taken
// before the read; ttl is what Redis had left of it (0: unknown).
func (r *Repository[T]) nearStore(ctx context.Context, tk near.Ticket, k keys.Key, entry []byte, ttl time.Duration) {
	if r.near == nil || len(entry) == 0 {
		return
	}
	key := k.Value()
	testhooks.BeforeNearStore(ctx, key)
	if testhooks.NearUnfenced(ctx) {
		tk = r.near.tier.Ticket(key) // what a cache without fencing does
	}
	if ttl <= 0 {
		ttl = r.opts.longestTTL()
	}
	it := &nearItem[T]{}
	switch entry[0] {
	case entryAbsent:
	case entryRow:
		it.ok = true
		if !r.near.plain {
			it.entry = entry
		} else if err := r.decodeRow(ctx, entry[1:], &it.row); err != nil {
			return
		}
	default:
		return
	}
	const overhead = 64 // the item, its key's header, otter's node, roughly
	r.near.cache.Store(tk, key, it, len(entry)+len(key)+overhead, ttl)
}

// nearDrop drops rows written or invalidated through this process from the near tier.
func (r *Repository[T]) nearDrop(ks ...keys.Key) {
	if r.near == nil {
		return
	}
	for _, k := range ks {
		r.near.tier.Drop(k.Value())
	}
}

// nearStats adds the model's near-cache counters to s.
func (r *Repository[T]) nearStats(s Stats) Stats {
	if r.near == nil {
		return s
	}
	n := r.near.cache.Stats()
	s.NearHits, s.NearMisses, s.NearEvictions = n.Hits, n.Misses, n.Evictions
	return s
}

// nearTierStats returns the counters of the Cache's near tier.
func (c *Cache) nearTierStats() (invalidations, flushes uint64) {
	c.near.mu.Lock()
	tier := c.near.tier
	c.near.mu.Unlock()
	if tier == nil {
		return 0, 0
	}
	s := tier.Stats()
	return s.Invalidations, s.Flushes
}

// nearFetch is what GetMany's near-tier lookup leaves for the Redis read: which ids
// the near tier answered, and the tickets and remaining TTLs of the others.
type nearFetch struct {
	hits    []bool
	tickets []near.Ticket
	ttls    []time.Duration
}

func (nf *nearFetch) hit(i int) bool { return nf != nil && nf.hits[i] }

// fetchEntries reads the entries of ks: from the near tier where it answers (putting
// those rows into rows), from Redis for the others, in one round trip.
func (r *Repository[T]) fetchEntries(ctx context.Context, ks []keys.Key, rows []*T) ([][]byte, *nearFetch, error) {
	if r.near == nil {
		entries, err := r.store.GetMany(ctx, ks)
		return entries, nil, err
	}
	nf := &nearFetch{hits: make([]bool, len(ks)), tickets: make([]near.Ticket, len(ks)), ttls: make([]time.Duration, len(ks))}
	var rest []keys.Key
	var at []int
	for i, k := range ks {
		if row, ok, hit := r.nearGet(ctx, k); hit {
			nf.hits[i] = true
			if ok {
				rows[i] = &row
			}
			continue
		}
		nf.tickets[i] = r.nearTicket(k)
		rest, at = append(rest, k), append(at, i)
	}
	entries := make([][]byte, len(ks))
	if len(rest) == 0 {
		return entries, nf, nil
	}
	got, ttls, err := r.store.GetManyWithTTL(ctx, rest)
	if err != nil {
		return nil, nil, err
	}
	for j, i := range at {
		entries[i], nf.ttls[i] = got[j], ttls[j]
	}
	return entries, nf, nil
}
