package readthrough

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

// Repository is the cached repository of model T: reads (Get, GetMany) and writes
// (Create, Save, Delete) under the model's write policy. Get it from Register. It is
// safe for concurrent use; WithDB and In return copies bound to another *gorm.DB or a
// transaction.
type Repository[T any] struct {
	cache *Cache
	db    *gorm.DB
	inTx  bool
	// base is the *gorm.DB outside any transaction, for the steps that run after a
	// commit (write-through fills).
	base *gorm.DB
	// tx collects the cache effects of writes made through In(tx); nil otherwise.
	tx      *Tx
	store   *store.Store
	model   *model
	rec     *recorder
	opts    ModelOptions
	log     *slog.Logger
	stats   *counters
	flights *flights
	// reg is what the registry lists for the model; every lease records it (see
	// internal/store's registry).
	reg store.Model
	// journal journals the model's writes under writepolicy.WriteBack.
	journal *writeback.Journal
	// warnings rate-limits the model's warnings; copies from WithDB and In share it.
	warnings *warnings
	// near is the model's near cache, nil when off (near.go).
	near *nearModel[T]
}

// Cached entries start with one byte saying what follows.
const (
	entryRow    = 'v' // the codec's bytes of the row's column record follow
	entryAbsent = 'n' // the row does not exist
)

// WithDB returns a repository that reads through db, for example a transaction begun
// with db.Begin or inside db.Transaction. When db is inside a transaction the
// repository neither reads nor fills the cache: the transaction may see rows no one
// else can see yet, or must not see rows committed after it began.
//
// Writes through a repository bound to a transaction this way return ErrUntrackedTx:
// the repository cannot see the commit, after which their cache effects must happen.
// Use In with a Tx from Transaction or WrapTx instead.
//
// db must reach the primary. Misses fill the cache from db, and a replica that lags
// would fill it with rows older than the invalidations already done, which nothing
// would remove until the entry's TTL. The same holds for the *gorm.DB given to New
// (GORM's dbresolver, for one, sends reads to replicas unless told otherwise).
func (r *Repository[T]) WithDB(db *gorm.DB) *Repository[T] {
	c := r.clone()
	c.db, c.tx = db, nil
	if _, c.inTx = db.Statement.ConnPool.(gorm.TxCommitter); !c.inTx {
		c.base = db
	}
	return c
}

// clone returns a copy of r sharing its state (counters, flights).
func (r *Repository[T]) clone() *Repository[T] {
	return &Repository[T]{
		cache: r.cache, db: r.db, inTx: r.inTx, base: r.base, tx: r.tx, store: r.store, model: r.model, rec: r.rec,
		opts: r.opts, log: r.log, warnings: r.warnings, stats: r.stats, flights: r.flights, reg: r.reg,
		journal: r.journal, near: r.near,
	}
}

// Stats returns a snapshot of the repository's counters.
func (r *Repository[T]) Stats() Stats { return r.nearStats(r.stats.snapshot()) }

// Get returns the row whose primary key is id, from Redis when cached, else from
// Postgres (then caching it, fenced against concurrent writes). ok is false when there
// is no such row. For a composite primary key pass id as []any with the values in the
// order the key's fields are declared.
//
// Redis failures are counted in Stats.Errors and the row is read from Postgres, except
// for write-back models: Postgres may lack their acknowledged writes, so Get returns
// ErrRedisUnavailable. Otherwise the error is a database error or a bad id.
func (r *Repository[T]) Get(ctx context.Context, id any) (row T, ok bool, err error) {
	r = r.recordedIDs(ctx, id) // deps.go
	if r.inTx {
		return r.load(ctx, id)
	}
	k, err := r.model.key(id)
	if err != nil {
		return row, false, err
	}
	start, t0 := r.flights.clock.Load(), r.readStart()
	if row, ok, hit := r.nearGet(ctx, k); hit {
		r.observeRead(ctx, t0, OutcomeNearHit)
		return row, ok, nil
	}
	c, err := r.getShared(ctx, start, k, id) // hotkey.go
	if err != nil {
		defer r.observeRead(ctx, t0, OutcomeError)
		if err := r.fallBack(err); err != nil {
			return row, false, err
		}
		// Concurrent reads of the key share one query, as misses do: when Redis is slow
		// because of a burst of reads, Postgres does not get the burst instead.
		return r.miss(ctx, start, k, id, true)
	}
	if c.failed != nil { // the fill this read shared could not load the row (hotkey.go)
		r.stats.misses.Add(1)
		r.flights.missed()
		r.observeRead(ctx, t0, OutcomeError)
		return row, false, c.failed
	}
	if c.loaded != nil { // loaded by this read, uncacheable (hotkey.go)
		r.stats.misses.Add(1)
		r.flights.missed()
		defer r.observeRead(ctx, t0, OutcomeMiss)
		if row := c.loaded.(*T); r.visible(ctx, row) {
			return *row, true, nil
		}
		return row, false, nil
	}
	if c.filled {
		r.stats.misses.Add(1)
		r.flights.missed()
		defer r.observeRead(ctx, t0, OutcomeMiss)
		if row, ok := c.decoded.(*T); ok { // this read sent the fill (hotkey.go)
			return r.decodedRow(ctx, row)
		}
		return r.flightRow(ctx, k, id, c.entry)
	}
	if c.cached {
		if row, ok, err := r.cachedRow(ctx, k, id, c.entry); err == nil {
			r.flights.hit()
			r.nearStore(ctx, c.tk, k, c.entry, c.ttl)
			r.observeRead(ctx, t0, hitOutcome(ok))
			return row, ok, nil
		}
	}
	r.flights.missed()
	r.stats.misses.Add(1)
	defer r.observeRead(ctx, t0, OutcomeMiss)
	return r.miss(ctx, start, k, id, false)
}

// decode turns a cached entry into a row, counting hits; an undecodable entry is deleted
// and counted, and reported as an error so the caller treats it as a miss.
func (r *Repository[T]) decode(ctx context.Context, k keys.Key, entry []byte) (row T, ok bool, err error) {
	if len(entry) == 1 && entry[0] == entryAbsent {
		r.stats.negativeHits.Add(1)
		return row, false, nil
	}
	if len(entry) > 0 && entry[0] == entryRow {
		p, _ := r.rec.rows.Get().(*T)
		if p == nil {
			p = new(T)
		}
		if err = r.decodeRow(ctx, entry[1:], p); err == nil {
			row, ok, err = r.inScope(ctx, p)
		}
		var zero T
		*p = zero // the pool keeps nothing of the row
		r.rec.rows.Put(p)
		if err == nil {
			return row, ok, nil
		}
	} else {
		err = fmt.Errorf("entry starts with %q, want %q or %q", entry[:min(len(entry), 1)], entryRow, entryAbsent)
	}
	r.stats.decodeErrors.Add(1)
	r.warn("undecodable cache entry deleted", slog.String("key", k.Value()), slog.Any("error", err))
	if derr := r.store.DeleteEntry(ctx, k, r.seal(entry)); derr != nil {
		r.redisFailed(derr)
	}
	var zero T
	return zero, false, fmt.Errorf("readthrough: decode %s: %w", k, err)
}

// flights lets concurrent misses of a key in this process share one fill (see miss).
type flights struct {
	group singleflight.Group
	// clock orders reads against fills: a read takes its value when it begins, and a
	// fill takes the next value at a moment its entry was the row's current state.
	clock atomic.Uint64
	// gets lets concurrent Gets of a key share one Redis GET (hotkey.go); unshared
	// turns that off (testhooks.Unshared).
	gets     getGroup
	unshared bool
	// combine: reads may use store.ReadOrLease (a single Redis, no near tier, entries
	// without an envelope), which they do while missScore is positive: each miss adds
	// missBump (up to missCap) and each hit takes one off. A hit through the script
	// costs more than a GET, so a model that hits reads with GETs; one that has missed
	// in its last few reads reads with the script, which brings a miss to two round
	// trips. The script hits that follow a miss are at most missBump, a bounded
	// fraction of what the miss itself cost (a Postgres query).
	combine   bool
	missScore atomic.Int32
	// unordered lets a Get take a GET sent before it began (testhooks.UnorderedGets).
	unordered bool
}

const (
	missBump = 8
	missCap  = 64
)

// missed records a miss of Get in f.missScore.
func (f *flights) missed() {
	if f.combine && f.missScore.Load() < missCap {
		f.missScore.Add(missBump)
	}
}

// hit records a hit of Get in f.missScore; while it is zero, a hit writes nothing.
func (f *flights) hit() {
	if v := f.missScore.Load(); v > 0 {
		f.missScore.CompareAndSwap(v, v-1)
	}
}

// flight is what a fill hands to the misses that shared it: the entry, and the clock
// value of a moment at which the entry was the row's current state.
type flight struct {
	entry []byte
	at    uint64
	// row is the loaded row (a *T) when it has no entry because it cannot be cached
	// exactly; entry is nil then.
	row any
	// decoded is the row of entry (a *T), decoded once already by the check that it
	// comes back as it went in (recorder.appendRow); nil for an entry of no row. Only
	// a caller that shared the flight with no one may take it (see miss): the others
	// decode their own copies, so callers never share slices or maps.
	decoded any
}

// miss fills the row once per process: concurrent misses of one key share one flight.
// With direct (Redis failed), the flight reads Postgres and stores nothing.
//
// A caller takes a flight's entry only if the entry was current at some moment after
// the caller began (start is the clock's value then). Otherwise the flight read the
// row before the caller began, and a write may have committed and returned in between:
// handing that caller the older row would break read-your-writes. Such a caller joins
// the next flight, which begins after this one ended, and so after the caller began.
func (r *Repository[T]) miss(ctx context.Context, start uint64, k keys.Key, id any, direct bool) (row T, ok bool, err error) {
	ctx, end := r.startOp(ctx, OpMiss)
	defer func() { end(missOutcome(ok, err), err) }()
	name, fill := k.Value(), r.fill
	if direct {
		name, fill = "db\x00"+name, r.loadFlight
	}
	for again := true; ; again = false {
		ch := r.flights.group.DoChan(name, func() (any, error) {
			// The flight outlives a caller that gives up; it is bounded by its own timeouts.
			return fill(context.WithoutCancel(ctx), k, id)
		})
		testhooks.Joined(ctx, k.Value())
		var res singleflight.Result
		select {
		case <-ctx.Done():
			return row, false, ctx.Err()
		case res = <-ch:
		}
		if res.Err != nil {
			return row, false, res.Err
		}
		f := res.Val.(flight)
		if again && f.at <= start {
			continue
		}
		if f.entry == nil {
			// The row cannot be cached. Only the caller that loaded it takes it; the
			// others load their own copy rather than share its slices and maps. It was
			// loaded as Postgres holds it, soft-deleted or not: apply the scope.
			if !res.Shared {
				if row := f.row.(*T); r.visible(ctx, row) {
					return *row, true, nil
				}
				return row, false, nil
			}
			return r.load(ctx, id)
		}
		if !res.Shared {
			if row, ok := f.decoded.(*T); ok {
				return r.decodedRow(ctx, row)
			}
		}
		return r.flightRow(ctx, k, id, f.entry)
	}
}

// decodedRow returns row, decoded from an entry for this caller alone (flightRow, or
// flight.decoded), in the repository's scope.
func (r *Repository[T]) decodedRow(ctx context.Context, row *T) (T, bool, error) {
	if !r.visible(ctx, row) {
		var zero T
		return zero, false, nil
	}
	return *row, true, nil
}

// flightRow turns an entry of this model's version (its envelope removed, as in a
// flight) into a row in the repository's scope.
func (r *Repository[T]) flightRow(ctx context.Context, k keys.Key, id any, entry []byte) (row T, ok bool, err error) {
	switch {
	case len(entry) == 0 || entry[0] != entryRow && entry[0] != entryAbsent && entry[0] != entrySoftDelete:
		return row, false, fmt.Errorf("readthrough: decode %s: entry starts with %q", k, entry[:min(len(entry), 1)])
	case entry[0] == entryAbsent:
		return row, false, nil
	case entry[0] == entrySoftDelete:
		return r.softDeleted(ctx, k, id, entry)
	}
	// Each caller decodes its own copy, so callers never share slices or maps.
	if err := r.decodeRow(ctx, entry[1:], &row); err != nil {
		return row, false, fmt.Errorf("readthrough: decode %s: %w", k, err)
	}
	return r.decodedRow(ctx, &row)
}

// fill loads the row under a lease and stores it if the lease survived the load.
//
// The order matters. The lease is taken before the database is read: a write that
// commits after the read began invalidates the row, which voids the lease, so the store
// below is refused and the old row never reaches the cache. A write that committed
// before the lease was taken is seen by the read. Between the two there is no gap.
//
// When another process holds the lease, this reader waits for its fill, polling with a
// growing interval, for at most WaitTimeout; then it reads Postgres itself and caches
// nothing, since it holds no lease.
func (r *Repository[T]) fill(ctx context.Context, k keys.Key, id any) (flight, error) {
	if testhooks.Unfenced(ctx) {
		return r.fillUnfenced(ctx, k, id)
	}
	foreign := false // the row's pending write is another schema version's
	var (
		f    flight
		ferr error
	)
	expired, err := r.awaitLease(ctx, func() (bool, store.Lease) {
		at := r.flights.clock.Add(1)
		lease, err := r.store.TakeLease(ctx, r.reg, k, r.opts.FenceDuration)
		if err != nil {
			if ferr = r.fallBack(err); ferr == nil {
				f, ferr = r.loadFlight(ctx, k, id)
			}
			return true, lease
		}
		switch lease.State {
		case store.Found:
			inner, mine := r.open(lease.Value)
			if !mine {
				// Only a pending write of another version is returned (see the lease
				// script): wait for a flusher to apply it, then fill from Postgres.
				foreign = true
				return false, lease
			}
			foreign = false
			if _, _, err := r.decodeCheck(ctx, inner); err == nil {
				f = flight{entry: inner, at: at}
				return true, lease
			}
			// Undecodable: wait; the lease holder or TTL replaces it.
		case store.Acquired:
			f, ferr = r.fillLeased(ctx, k, id, lease.Token, at)
			return true, lease
		}
		return false, lease
	})
	switch {
	case err != nil:
		return flight{}, err
	case expired && foreign:
		return flight{}, fmt.Errorf("%w: %s: waited %v for a flusher to apply it", ErrOtherVersionPending, k, r.opts.WaitTimeout)
	case expired:
		return r.loadFlight(ctx, k, id)
	}
	return f, ferr
}

// awaitLease is the lease loop of the fills of rows (fill) and of lookup entries
// (fillLookup). try reads the entry or takes its lease, once; done says it has the
// answer, else lease is what it found (held by another reader, or an entry it cannot
// use). Between tries awaitLease waits, polling with a growing interval that never
// passes the lease's remaining time, for at most WaitTimeout; then it returns
// expired, and the caller reads Postgres itself, caching nothing. The error is the
// context's.
func (r *Repository[T]) awaitLease(ctx context.Context, try func() (done bool, lease store.Lease)) (expired bool, err error) {
	deadline := time.Now().Add(r.opts.WaitTimeout)
	poll := time.Millisecond
	for waited := false; ; waited = true {
		done, lease := try()
		if done {
			return false, nil
		}
		if !waited {
			r.stats.stampedeWaits.Add(1)
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return true, nil
		}
		wait := min(poll, remaining)
		if lease.State == store.Held && lease.Wait > 0 {
			wait = min(wait, lease.Wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-t.C:
		}
		poll = min(2*poll, 50*time.Millisecond)
	}
}

func (r *Repository[T]) decodeCheck(ctx context.Context, entry []byte) (T, bool, error) {
	var row T
	if len(entry) == 1 && entry[0] == entryAbsent {
		return row, false, nil
	}
	if len(entry) > 0 && entry[0] == entryRow {
		err := r.decodeRow(ctx, entry[1:], &row)
		return row, err == nil, err
	}
	if len(entry) > 0 && entry[0] == entrySoftDelete {
		_, base, err := parseSoftDelete(entry)
		if inner, mine := r.open(base); err == nil && len(base) > 0 && mine {
			_, _, err = r.decodeCheck(ctx, inner)
		}
		return row, false, err
	}
	return row, false, errors.New("bad entry tag")
}

// decodeRow sets row from the codec's bytes of its column record.
func (r *Repository[T]) decodeRow(ctx context.Context, data []byte, row *T) error {
	cols, _ := r.rec.cols.Get().(*[]driver.Value)
	if cols == nil {
		s := make([]driver.Value, len(r.rec.fields))
		cols = &s
	}
	err := r.rec.decode(ctx, data, reflect.ValueOf(row).Elem(), *cols)
	clear(*cols)
	r.rec.cols.Put(cols)
	return err
}

// fillLeased loads the row and stores it under the lease token, taken at clock value
// leased. The flight's moment is when the store was sent if it was stored (no
// invalidation or write-back write came between the lease and the store), else when
// the lease was taken: under write-back, Postgres may lack writes acknowledged after
// that, so a load sent later is not current for a reader begun after them.
func (r *Repository[T]) fillLeased(ctx context.Context, k keys.Key, id any, token string, leased uint64) (flight, error) {
	ctx, end := r.startOp(ctx, OpFill)
	outcome, ferr := OutcomeUncached, error(nil)
	defer func() { end(outcome, ferr) }()
	f, err := r.loadFlight(ctx, k, id)
	f.at = leased
	if err != nil {
		if rerr := r.store.Release(ctx, k, token); rerr != nil {
			r.redisFailed(rerr)
		}
		outcome, ferr = OutcomeError, err
		return f, err
	}
	testhooks.AfterLoad(ctx, k.Value())
	if f.entry == nil { // uncacheable
		if err := r.store.Release(ctx, k, token); err != nil {
			r.redisFailed(err)
		}
		return f, nil
	}
	ttl, cache := r.ttl(f.entry)
	if !cache {
		if err := r.store.Release(ctx, k, token); err != nil {
			r.redisFailed(err)
		}
		return f, nil
	}
	at := r.flights.clock.Add(1)
	stored, err := r.store.Fill(ctx, k, token, r.seal(f.entry), ttl)
	switch {
	case err != nil:
		r.redisFailed(err)
		outcome, ferr = OutcomeError, err
	case stored:
		r.stats.fills.Add(1)
		f.at = at
		outcome = OutcomeStored
	default:
		r.stats.fillsRefused.Add(1)
		outcome = OutcomeRefused
	}
	return f, nil
}

func (r *Repository[T]) fillUnfenced(ctx context.Context, k keys.Key, id any) (flight, error) {
	f, err := r.loadFlight(ctx, k, id)
	if err != nil {
		return f, err
	}
	testhooks.AfterLoad(ctx, k.Value())
	if f.entry == nil {
		return f, nil
	}
	if ttl, cache := r.ttl(f.entry); cache {
		if err := r.store.FillUnfenced(ctx, k, r.seal(f.entry), ttl); err != nil {
			return f, err
		}
		r.stats.fills.Add(1)
	}
	return f, nil
}

// ttl returns how long to cache entry, and whether to cache it at all.
func (r *Repository[T]) ttl(entry []byte) (time.Duration, bool) {
	if entry[0] == entryAbsent {
		return r.opts.NegativeTTL, r.opts.NegativeTTL > 0
	}
	ttl := r.opts.TTL
	if j := r.opts.TTLJitter; j > 0 {
		ttl += time.Duration((rand.Float64()*2 - 1) * j * float64(ttl))
	}
	return max(ttl, time.Millisecond), true
}

// loadFlight reads the row from Postgres, for a flight: the entry is current as of when
// the query was sent.
func (r *Repository[T]) loadFlight(ctx context.Context, k keys.Key, id any) (flight, error) {
	at := r.flights.clock.Add(1)
	testhooks.BeforeLoad(ctx, k.Value())
	// Cached as Postgres holds it, soft-deleted or not, whatever the reader's scope.
	row, ok, err := r.all().load(ctx, id)
	if err != nil {
		return flight{at: at}, err
	}
	entry, back, err := r.encodeBack(ctx, &row, ok)
	if err != nil {
		// Served from Postgres, uncached: a read never fails because of the cache.
		r.uncacheable(err)
		return flight{at: at, row: &row}, nil
	}
	f := flight{entry: entry, at: at}
	if back != nil {
		f.decoded = back
	}
	return f, nil
}

// encode returns the cache entry of row (of no row when !ok). The error wraps
// errUncacheable: the row's column record would not come back as it is.
func (r *Repository[T]) encode(ctx context.Context, row *T, ok bool) ([]byte, error) {
	entry, _, err := r.encodeBack(ctx, row, ok)
	return entry, err
}

// encodeBack is encode, also returning the row decoded from the entry (nil when !ok),
// as a hit on the entry would return it before its scope is applied.
func (r *Repository[T]) encodeBack(ctx context.Context, row *T, ok bool) ([]byte, *T, error) {
	if !ok {
		return []byte{entryAbsent}, nil, nil
	}
	entry, back, err := r.rec.appendRow(ctx, []byte{entryRow}, reflect.ValueOf(row).Elem())
	if err != nil {
		return nil, nil, fmt.Errorf("readthrough: encode %s with codec %s: %w", r.model.schema.Name, r.rec.codec.Name(), err)
	}
	return entry, back.(*T), nil
}

// load reads one row from Postgres, bypassing the cache.
func (r *Repository[T]) load(ctx context.Context, id any) (row T, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.LoadTimeout)
	defer cancel()
	r.stats.loads.Add(1)
	q := r.db.WithContext(ctx).Model(&row)
	vals, err := r.idValues(id)
	if err != nil {
		return row, false, err
	}
	for i, f := range r.model.pk {
		q = q.Where(clause.Eq{Column: clause.Column{Table: clause.CurrentTable, Name: f.DBName}, Value: vals[i]})
	}
	res := q.Limit(1).Find(&row)
	if res.Error != nil {
		return row, false, fmt.Errorf("readthrough: load %s %v: %w", r.model.schema.Name, id, res.Error)
	}
	return row, res.RowsAffected > 0, nil
}

func (r *Repository[T]) idValues(id any) ([]any, error) {
	if len(r.model.pk) == 1 {
		return []any{id}, nil
	}
	vals, ok := id.([]any)
	if !ok || len(vals) != len(r.model.pk) {
		return nil, fmt.Errorf("readthrough: %s has a composite primary key (%s): pass the id as []any with %d values",
			r.model.schema.Name, r.model.pkNames(), len(r.model.pk))
	}
	return vals, nil
}

// Invalidate deletes the cached entries of the rows with these ids and voids fills in
// progress for them, so the next read loads them from Postgres. Call it after a write
// commits; writes made through the library do this themselves.
func (r *Repository[T]) Invalidate(ctx context.Context, ids ...any) error {
	ks := make([]keys.Key, len(ids))
	for i, id := range ids {
		k, err := r.model.key(id)
		if err != nil {
			return err
		}
		ks[i] = k
	}
	err := r.store.Invalidate(ctx, ks...)
	r.nearDrop(ks...)
	if err != nil {
		return fmt.Errorf("readthrough: invalidate %s: %w", r.model.schema.Name, err)
	}
	r.stats.invalidations.Add(uint64(len(ks)))
	return nil
}

// fallBack counts a failed Redis read and says whether the read may go on in Postgres:
// nil, unless the model is write-back.
func (r *Repository[T]) fallBack(err error) error {
	r.redisFailed(err)
	if r.opts.WritePolicy == writepolicy.WriteBack {
		return fmt.Errorf("%w: %s: %w", ErrRedisUnavailable, r.model.schema.Name, err)
	}
	return nil
}

func (r *Repository[T]) redisFailed(err error) {
	if errors.Is(err, store.ErrBreakerOpen) {
		r.stats.redisSkipped.Add(1) // not a failure: Redis was not tried (breaker.go)
		return
	}
	r.stats.errors.Add(1)
	r.warn("redis unavailable; reading from postgres", slog.Any("error", err))
}

// warnings limits how often a model logs a warning, shared by a repository and its
// copies (WithDB, In) so that copies do not each warn.
type warnings struct {
	redis       rate.Sometimes // Redis failures: the first, then at most once a second
	uncacheable rate.Sometimes // uncacheable rows: the first, then at most once a minute
}

func newWarnings() *warnings {
	return &warnings{
		redis:       rate.Sometimes{Interval: time.Second},
		uncacheable: rate.Sometimes{Interval: time.Minute},
	}
}

func (r *Repository[T]) warn(msg string, attrs ...slog.Attr) {
	r.warnings.redis.Do(func() {
		r.log.LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...)
	})
}

// Peek returns what Redis holds for the row with this id, without reading Postgres,
// taking a lease or counting anything, for inspection and tests (reads use Get).
// cached is false when Redis holds no entry; ok is false when the entry says there is
// no such row. An entry that cannot be decoded is an error. A write-back write pending
// under a deleted entry is not looked at.
func (r *Repository[T]) Peek(ctx context.Context, id any) (row T, ok, cached bool, err error) {
	k, err := r.model.key(id)
	if err != nil {
		return row, false, false, err
	}
	entry, cached, err := r.store.Get(ctx, k)
	if err != nil || !cached {
		return row, false, false, err
	}
	inner, mine := r.open(entry)
	if !mine {
		return row, false, true, fmt.Errorf("readthrough: %s holds an entry of another schema version", k)
	}
	row, ok, err = r.decodeCheck(ctx, inner)
	if err != nil {
		return row, false, true, fmt.Errorf("readthrough: decode %s: %w", k, err)
	}
	return row, ok, true, nil
}

// Key returns the Redis key of the row with this id, for inspection and tests.
func (r *Repository[T]) Key(id any) (string, error) {
	k, err := r.model.key(id)
	if err != nil {
		return "", err
	}
	return k.Value(), nil
}

// Table returns the table's name as it appears in keys: schema-qualified, quoted where
// Postgres would need quotes.
func (r *Repository[T]) Table() string { return r.model.space.Table() }

// Version returns the version in the model's keys: its schema version, or "_wb" for a
// write-back model, whose keys every schema version shares (each entry records its
// own).
func (r *Repository[T]) Version() string { return r.model.space.Version() }
