package readthrough

import (
	"context"
	"fmt"

	"golang.org/x/sync/singleflight"
	"gorm.io/gorm/clause"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
)

// lookupFlight is what a lookup fill hands to the misses that shared it.
type lookupFlight struct {
	// entry is the entry as filled, or nil when it is not cached (a list over the
	// cap, a fill that read Postgres without a lease).
	entry []byte
	// at is a clock value at which entry was current (see miss).
	at uint64
	// rows are the rows loaded, handed only to a caller that did not share the
	// flight: the others read their own through the primary-key path.
	rows []any
	// found: the entry was read from Redis by a combined read (fillLookup), not
	// filled: the lookup hit.
	found bool
}

// lookupMiss fills q's entry once per process, under miss's read-your-writes rule:
// a caller takes a flight only if it was current at a moment after start. own
// reports that the caller alone took the flight (and may use its rows).
func (r *Repository[T]) lookupMiss(ctx context.Context, start uint64, q lookupQuery) (f lookupFlight, own bool, err error) {
	name := "l\x00" + q.key.Value()
	for again := true; ; again = false {
		ch := r.flights.group.DoChan(name, func() (any, error) {
			// The flight outlives a caller that gives up; it is bounded by its own timeouts.
			return r.fillLookup(context.WithoutCancel(ctx), q)
		})
		testhooks.Joined(ctx, q.key.Value())
		var res singleflight.Result
		select {
		case <-ctx.Done():
			return f, false, ctx.Err()
		case res = <-ch:
		}
		if res.Err != nil {
			return f, false, res.Err
		}
		f = res.Val.(lookupFlight)
		if again && f.at <= start {
			continue
		}
		return f, !res.Shared, nil
	}
}

// fillLookup loads q's entry under a lease and stores it if the lease survived, as
// fill does for a row, waiting as fill does for another reader's lease (awaitLease).
// While the model misses (see flights.combine) the first try reads the entry or takes
// the lease in one round trip (store.ReadOrLease), and the lookup reads no entry
// before it (see readLookup): a miss costs that and the fill script. An entry found
// then is returned with found set, as a hit.
func (r *Repository[T]) fillLookup(ctx context.Context, q lookupQuery) (lookupFlight, error) {
	if testhooks.Unfenced(ctx) {
		return r.fillLookupUnfenced(ctx, q)
	}
	reg := r.reg.WithLookup(q.def.id)
	combined, first := r.combined(ctx), true
	var (
		f    lookupFlight
		ferr error
	)
	expired, err := r.awaitLease(ctx, func() (bool, store.Lease) {
		at := r.flights.clock.Add(1)
		take := r.store.TakeLease
		if combined {
			// Writes the registries and the index only if it takes the lease.
			take = r.store.ReadOrLease
		}
		lease, err := take(ctx, reg, q.key, r.opts.FenceDuration)
		if err != nil {
			if ferr = r.fallBack(err); ferr == nil {
				f, ferr = r.loadLookup(ctx, q)
			}
			return true, lease
		}
		switch lease.State {
		case store.Found:
			if _, err := r.parseLookupEntry(q.def.id.Kind(), lease.Value); err == nil {
				f = lookupFlight{entry: lease.Value, at: at, found: combined && first}
				return true, lease
			}
			// Undecodable: deleted, so that the next try takes the lease.
			r.undecodableLookup(ctx, q, lease.Value, err)
		case store.Acquired:
			f, ferr = r.fillLookupLeased(ctx, q, lease.Token, at)
			return true, lease
		}
		first = false // an entry found after a wait was filled by another reader
		return false, lease
	})
	switch {
	case err != nil:
		return lookupFlight{}, err
	case expired:
		return r.loadLookup(ctx, q)
	}
	return f, ferr
}

// fillLookupLeased loads q's entry and stores it under the lease token, taken at
// clock value leased (see fillLeased).
func (r *Repository[T]) fillLookupLeased(ctx context.Context, q lookupQuery, token string, leased uint64) (_ lookupFlight, ferr error) {
	ctx, end := r.startOp(ctx, OpFill)
	outcome := OutcomeUncached
	defer func() { end(outcome, ferr) }()
	f, err := r.loadLookup(ctx, q)
	f.at = leased
	release := func() {
		if err := r.store.Release(ctx, q.key, token); err != nil {
			r.redisFailed(err)
		}
	}
	if err != nil {
		release()
		outcome = OutcomeError
		return f, err
	}
	testhooks.AfterLoad(ctx, q.key.Value())
	if f.entry == nil {
		release()
		return f, nil
	}
	ttl, cache := r.ttl(f.entry)
	if !cache {
		release()
		return f, nil
	}
	at := r.flights.clock.Add(1)
	stored, err := r.store.Fill(ctx, q.key, token, f.entry, ttl)
	switch {
	case err != nil:
		r.redisFailed(err)
		outcome = OutcomeError
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

func (r *Repository[T]) fillLookupUnfenced(ctx context.Context, q lookupQuery) (lookupFlight, error) {
	f, err := r.loadLookup(ctx, q)
	if err != nil {
		return f, err
	}
	testhooks.AfterLoad(ctx, q.key.Value())
	if f.entry == nil {
		return f, nil
	}
	if ttl, cache := r.ttl(f.entry); cache {
		if err := r.store.FillUnfenced(ctx, q.key, f.entry, ttl); err != nil {
			return f, err
		}
		r.stats.fills.Add(1)
	}
	return f, nil
}

// loadLookup reads q's rows from Postgres, for a flight: the entry is current as of
// when the query was sent. A list over the cap is read whole and has no entry.
func (r *Repository[T]) loadLookup(ctx context.Context, q lookupQuery) (lookupFlight, error) {
	at := r.flights.clock.Add(1)
	testhooks.BeforeLoad(ctx, q.key.Value())
	kind := q.def.id.Kind()
	limit := 2
	if kind == keys.List {
		limit = r.model.lookups.cap + 1
	}
	rows, err := r.loadByValues(ctx, q, limit)
	if err != nil {
		return lookupFlight{at: at}, err
	}
	if kind == keys.List && len(rows) > r.model.lookups.cap {
		r.stats.list.overCap.Add(1)
		rows, err = r.loadByValues(ctx, q, 0)
		return lookupFlight{at: at, rows: boxed(rows)}, err
	}
	entry, err := r.lookupEntry(ctx, kind, rows)
	if err != nil {
		return lookupFlight{at: at}, err
	}
	return lookupFlight{entry: entry, at: at, rows: boxed(rows)}, nil
}

func boxed[T any](rows []T) []any {
	out := make([]any, len(rows))
	for i := range rows {
		out[i] = &rows[i]
	}
	return out
}

// loadByValues reads the rows holding q's values in the repository's scope, ordered
// by primary key, at most limit of them (0: all). A unique lookup that finds two
// returns ErrNotUnique.
func (r *Repository[T]) loadByValues(ctx context.Context, q lookupQuery, limit int) ([]T, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.LoadTimeout)
	defer cancel()
	r.stats.loads.Add(1)
	db := r.db.WithContext(ctx).Model(new(T))
	for j, f := range q.def.fields {
		db = db.Where(clause.Eq{Column: clause.Column{Table: clause.CurrentTable, Name: f.DBName}, Value: q.vals[j]})
	}
	for _, c := range r.model.lookups.orderBy {
		db = db.Order(clause.OrderByColumn{Column: clause.Column{Table: clause.CurrentTable, Name: c}})
	}
	if limit > 0 {
		db = db.Limit(limit)
	}
	var rows []T
	if err := db.Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("readthrough: %s lookup %s of %s: %w", q.def.id.Kind(), q.def.id, r.model.schema.Name, err)
	}
	if q.def.id.Kind() == keys.Unique && len(rows) > 1 {
		return nil, fmt.Errorf("%w: %s by %v: at least two visible rows hold the values (a partial unique index?): none is returned", ErrNotUnique, r.model.schema.Name, q.canon)
	}
	return rows, nil
}
