package readthrough

import (
	"context"
	"slices"
	"time"

	"github.com/pgcache/pgcache/internal/near"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
)

// Lookup entries (By, ListBy) of a model with a near cache are kept in its near tier
// too, under their own Redis keys, fenced and dropped like rows: Redis reports every
// change of an entry's key (the invalidator's or a write's delete, a fill, a table
// flush, expiry), and this process drops the entries its own writes, Invalidate calls
// and stale entries delete. The rows an entry names come through Get and GetMany, so
// from the near tier too: a hit of a cached list is then answered in process.

// nearLookupGet returns a lookup entry and the ids it names from the near tier; hit
// is false when it cannot (no near cache, in a transaction, not held).
func (r *Repository[T]) nearLookupGet(k keys.Key) (entry []byte, ids []any, hit bool) {
	if r.near == nil || r.inTx {
		return nil, nil, false
	}
	it, found := r.near.cache.Get(k.Value())
	if !found || !it.lookup {
		return nil, nil, false
	}
	// The caller's own slice: callers pass ids on, and must not share one.
	return it.entry, slices.Clone(it.ids), true
}

// nearLookupStore keeps a lookup entry read from Redis, and the ids it names, under
// the ticket taken before the read; ttl is what Redis had left of it (0: unknown).
func (r *Repository[T]) nearLookupStore(ctx context.Context, tk near.Ticket, k keys.Key, entry []byte, ids []any, ttl time.Duration) {
	if r.near == nil || len(entry) == 0 {
		return
	}
	key := k.Value()
	testhooks.BeforeNearStore(ctx, key)
	if testhooks.NearUnfenced(ctx) {
		tk = r.near.tier.Ticket(key)
	}
	if ttl <= 0 {
		ttl = r.opts.longestTTL()
	}
	it := &nearItem[T]{lookup: true, entry: entry, ids: slices.Clone(ids)}
	const overhead = 64 + 16 // as nearStore's, and the ids' slice
	r.near.cache.Store(tk, key, it, len(entry)+len(key)+overhead+16*len(ids), ttl)
}
