package readthrough

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"
	"time"

	"github.com/pgcache/pgcache/internal/near"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
)

// Hot keys. Concurrent Gets of one key in a process share one Redis GET, as their
// misses share one fill (see miss): a thousand readers of a hot row take one
// connection from the client's pool, not a thousand, so none of them waits for a
// connection long enough to fall back to Postgres.
//
// Read-your-writes holds as for fills. A GET takes the flights' clock value when it is
// sent; a reader takes a shared reply only if the GET was sent after the reader began
// (the clock was read then). A reader that joins a GET sent before it began may be
// after a write whose invalidation that GET missed: it sends or joins the next GET.
// So a reader waits at most for two round trips.
//
// Each caller's context bounds its own wait. The reader that sends the GET sends it
// with its own context; if that context ends, the readers that joined it send another.
// Callers share the reply's bytes, which nothing changes: each decodes its own row
// (as the near tier's entries are decoded per hit).
//
// A GET that waited for a pooled connection and got none (store.ErrBusy) did not
// reach Redis, which may be answering everyone else: the reader waits, as for another
// reader's fill, and tries again, for at most ModelOptions.WaitTimeout; only then it
// falls back to Postgres. A Redis that does not answer is the circuit breaker's
// business (Options.Breaker).

// newFlights returns a model's flights; the test hooks turning sharing off, or letting
// a reader take any GET under way, are read from the context of c's *gorm.DB, as the
// near cache's hooks are.
func newFlights(c *Cache) *flights {
	ctx := c.db.Statement.Context
	f := &flights{unshared: ctx != nil && testhooks.Unshared(ctx), unordered: ctx != nil && testhooks.UnorderedGets(ctx)}
	f.gets.seed = maphash.MakeSeed()
	return f
}

// getShards is how many parts the GETs under way are split into, by key: readers of
// different keys rarely take the same mutex, so the group costs little at 16 or more
// goroutines reading many keys.
const getShards = 64

// getGroup holds the Redis GETs under way, by key, in getShards shards.
type getGroup struct {
	seed   maphash.Seed
	shards [getShards]getShard
	// free recycles the getCalls no reader joined: a lone reader, the common case,
	// then allocates nothing for the sharing. A call a reader joined is left to the
	// garbage collector, since the joiners may still read it.
	free sync.Pool
}

// getShard is one part of a getGroup. Its padding keeps two shards' mutexes off one
// cache line.
type getShard struct {
	mu sync.Mutex
	m  map[string]*getCall
	_  [48]byte
}

// getCall is one GET and what its readers get from it. Its fields are written by the
// reader that sends it, before done is closed.
type getCall struct {
	at     uint64 // the flights' clock when the GET was sent
	tk     near.Ticket
	entry  []byte
	ttl    time.Duration
	cached bool
	// filled: entry was loaded from Postgres and stored under the lease the read took
	// (sendReadOrLease); cached is set too.
	filled bool
	// decoded: for filled, the row of entry already decoded (flight.decoded); only the
	// sender takes it (joiners get a copy without it and decode their own).
	decoded any
	// loaded: the row the sender's ReadOrLease loaded that cannot be cached; only the
	// sender takes it (joiners get a copy without it and load their own).
	loaded any
	// failed: the sender's ReadOrLease took the lease and its load failed; every
	// reader of c returns the error, as the readers sharing a fill do (miss), rather
	// than load the row again.
	failed error
	err    error
	// abandoned: the sender's context ended, so err says nothing of Redis.
	abandoned bool
	// done is made by the first reader to join, and closed once the fields are set.
	done chan struct{}
}

// getShared is Get's Redis read: the call that answered it (its entry, remaining TTL
// and the near tier's ticket taken before the GET was sent; or, for a ReadOrLease that
// took the lease, the entry it filled or the uncacheable row it loaded: see
// sendReadOrLease). start is the clock's value when the read began.
func (r *Repository[T]) getShared(ctx context.Context, start uint64, k keys.Key, id any) (getCall, error) {
	if r.flights.unshared {
		c := getCall{tk: r.nearTicket(k)}
		c.entry, c.ttl, c.cached, c.err = r.getEntry(ctx, k)
		return c, c.err
	}
	var deadline time.Time // of the wait for a busy pool
	poll := time.Millisecond
	for {
		c, err := r.flights.gets.get(ctx, r, k, id)
		if err != nil {
			return getCall{}, err // ctx ended
		}
		switch {
		case c.failed != nil && (!c.abandoned || ctx.Err() != nil):
			return c, nil // Get returns c.failed
		case c.abandoned:
			if err := ctx.Err(); err != nil {
				return getCall{}, err // this reader sent it
			}
			continue // its sender gave up; this reader has not
		case c.err == nil && c.at <= start && !r.flights.unordered:
			continue // sent before this read began
		case errors.Is(c.err, store.ErrBusy):
			now := time.Now()
			if deadline.IsZero() {
				deadline = now.Add(r.opts.WaitTimeout)
				r.stats.stampedeWaits.Add(1)
			}
			if !now.Before(deadline) {
				break // waited enough: fall back
			}
			t := time.NewTimer(min(poll, deadline.Sub(now)))
			select {
			case <-ctx.Done():
				t.Stop()
				return getCall{}, ctx.Err()
			case <-t.C:
			}
			poll = min(2*poll, 20*time.Millisecond)
			continue
		}
		return c, c.err
	}
}

// get sends k's GET, or joins the one under way, and returns it once done. The reader
// that sends it gets a copy, so that its getCall can be reused.
func (g *getGroup) get(ctx context.Context, r interface {
	sendGet(context.Context, keys.Key, any, *getCall)
}, k keys.Key, id any) (res getCall, err error) {
	name := k.Value()
	sh := &g.shards[maphash.String(g.seed, name)%getShards]
	sh.mu.Lock()
	if c, ok := sh.m[name]; ok {
		if c.done == nil {
			c.done = make(chan struct{})
		}
		done := c.done
		sh.mu.Unlock()
		testhooks.JoinedGet(ctx, name)
		select {
		case <-ctx.Done():
			return getCall{}, ctx.Err()
		case <-done:
			res = *c
			res.loaded, res.decoded = nil, nil
			return res, nil
		}
	}
	if sh.m == nil {
		sh.m = make(map[string]*getCall)
	}
	c, _ := g.free.Get().(*getCall)
	if c == nil {
		c = new(getCall)
	}
	sh.m[name] = c
	sh.mu.Unlock()
	defer func() { res = g.finish(sh, name, c) }()
	r.sendGet(ctx, k, id, c)
	return getCall{}, nil // res is set by finish
}

// finish removes c from its shard, wakes the readers that joined it and returns a
// copy of c taken under the shard's lock (a joiner may be setting c.done); if no one
// joined, no one else holds c, and it is recycled.
func (g *getGroup) finish(sh *getShard, name string, c *getCall) getCall {
	sh.mu.Lock()
	out := *c
	delete(sh.m, name)
	joined := c.done != nil
	if joined {
		close(c.done)
	}
	sh.mu.Unlock()
	if !joined {
		*c = getCall{}
		g.free.Put(c)
	}
	return out
}

// sendGet sends the GET of c, or, while the model misses (see flights.combine),
// ReadOrLease.
func (r *Repository[T]) sendGet(ctx context.Context, k keys.Key, id any, c *getCall) {
	if r.combined(ctx) {
		r.sendReadOrLease(ctx, k, id, c)
		return
	}
	c.at = r.flights.clock.Add(1)
	c.tk = r.nearTicket(k)
	c.entry, c.ttl, c.cached, c.err = r.getEntry(ctx, k)
	c.abandoned = c.err != nil && ctx.Err() != nil
}

// combined says whether a read reads and leases in one round trip (see
// flights.combine): the model may, and has missed lately.
func (r *Repository[T]) combined(ctx context.Context) bool {
	return r.flights.combine && r.flights.missScore.Load() > 0 && !testhooks.Unfenced(ctx)
}

// sendReadOrLease reads k's entry or takes its lease in one round trip
// (store.ReadOrLease) and, with the lease, fills the row before the readers sharing c
// are woken: a miss costs two round trips (this and the fill script), not three. The
// readers take the filled entry as they would a GET's reply: c.at is the clock's value
// when the script was sent, and the load that follows it reads Postgres after every
// write that returned before (the fencing of fill applies unchanged, since fillLeased
// stores it). Held, or an uncacheable row: the readers miss, as after a GET.
func (r *Repository[T]) sendReadOrLease(ctx context.Context, k keys.Key, id any, c *getCall) {
	c.at = r.flights.clock.Add(1)
	lease, err := r.store.ReadOrLease(ctx, r.reg, k, r.opts.FenceDuration)
	if err != nil {
		c.err, c.abandoned = err, ctx.Err() != nil
		return
	}
	switch lease.State {
	case store.Found:
		c.entry, c.cached = lease.Value, true
	case store.Acquired:
		testhooks.Joined(ctx, k.Value()) // this read begun the key's fill
		// Observed as a miss with its fill inside, as Get's other misses are (miss).
		mctx, end := r.startOp(ctx, OpMiss)
		f, err := r.fillLeased(mctx, k, id, lease.Token, c.at)
		end(filledOutcome(f, err), err)
		switch {
		case err != nil && testhooks.FillErrorsDropped(ctx):
			// The readers miss and load the row again, as before this was fixed.
		case err != nil:
			// A sender whose own context ended abandoned the fill: the others read again.
			c.failed, c.abandoned = err, ctx.Err() != nil
		case f.entry != nil:
			c.entry, c.cached, c.filled, c.decoded = f.entry, true, true, f.decoded
		case f.row != nil:
			c.loaded = f.row
		}
	}
}

// filledOutcome is the outcome of a miss whose fill returned f and err.
func filledOutcome(f flight, err error) Outcome {
	switch {
	case err != nil:
		return OutcomeError
	case len(f.entry) > 0 && f.entry[0] == entryAbsent:
		return OutcomeNotFound
	}
	return OutcomeFound
}
