package readthrough

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
)

// UniqueLookup reads rows of T by the values of a unique column, or of the columns of
// a composite unique index, registered in ModelOptions.Unique. Get it from
// Repository.By. It is safe for concurrent use.
type UniqueLookup[T any] struct {
	r    *Repository[T]
	def  *lookupDef
	perm []int
	err  error // By's, returned by every method
}

// By returns the lookup of rows by the unique fields named (Go field names or
// column names), registered in ModelOptions.Unique; a composite one's fields in any
// order, which is then the order of the values its methods take. An unregistered
// lookup is not an error until its methods return ErrNotRegistered.
//
// Its reads are cached as the primary key of the one visible row (or "no such row"),
// the row itself coming through the cached primary-key path: a hit costs two Redis
// round trips. Inside a transaction (WithDB(tx), In) and through WithDB(db.Unscoped())
// they read Postgres and cache nothing.
func (r *Repository[T]) By(fields ...string) *UniqueLookup[T] {
	def, perm, err := r.model.lookups.resolve(r.model, keys.Unique, fields)
	return &UniqueLookup[T]{r: r, def: def, perm: perm, err: err}
}

// direct reports whether lookups read Postgres, caching nothing: in a transaction
// (which may see rows no one else does) and unscoped (entries hold visible rows).
func (r *Repository[T]) direct() bool {
	return r.inTx || r.db.Statement.Unscoped
}

// Get returns the visible row (not soft-deleted) whose fields hold val: one value,
// or for a composite lookup []any with the values in the order of the fields given to
// By. ok is false when there is none. A nil (NULL) value is refused with
// ErrNullLookup; several rows holding the values (see ModelOptions.Unique) with
// ErrNotUnique. A row returned holds the values asked for: one that no longer does is
// never returned from a stale entry (see lookup.go).
func (u *UniqueLookup[T]) Get(ctx context.Context, val any) (row T, ok bool, err error) {
	if u.err != nil {
		return row, false, u.err
	}
	r := u.r
	q, err := r.query(u.def, u.perm, val)
	if err != nil {
		return row, false, err
	}
	r = r.recorded(ctx, q.key) // deps.go
	if !r.direct() {
		// A stale entry is deleted and filled again once; the second time, Postgres
		// answers (a row changing under every fill must not keep the reader looping).
		for range 2 {
			row, ok, done, err := r.uniqueOnce(ctx, q)
			if done || err != nil {
				return row, ok, err
			}
		}
	}
	return r.uniqueDirect(ctx, q)
}

// uniqueDirect reads q's row from Postgres, caching nothing.
func (r *Repository[T]) uniqueDirect(ctx context.Context, q lookupQuery) (row T, ok bool, err error) {
	r.unrecordable(ctx) // deps.go
	rows, err := r.loadByValues(ctx, q, 2)
	if err != nil || len(rows) == 0 {
		return row, false, err
	}
	return rows[0], true, nil
}

// uniqueOnce answers q through its entry; done is false when the entry was stale
// (and is deleted).
func (r *Repository[T]) uniqueOnce(ctx context.Context, q lookupQuery) (row T, ok, done bool, err error) {
	start := r.flights.clock.Load()
	entry, ids, cached, err := r.cachedLookup(ctx, q)
	if err != nil {
		row, ok, err = r.uniqueDirect(ctx, q)
		return row, ok, true, err
	}
	if cached {
		r.lookupCount(q, true)
	} else {
		f, own, err := r.lookupMiss(ctx, start, q)
		r.lookupCount(q, f.found)
		if err != nil {
			return row, false, true, err
		}
		if own && f.rows != nil && !recording(ctx) { // recorded: through Get (deps.go)
			// Loaded by the values after this read began: current, and holding them.
			if len(f.rows) == 0 {
				return row, false, true, nil
			}
			return *f.rows[0].(*T), true, true, nil
		}
		if f.entry == nil {
			row, ok, err = r.uniqueDirect(ctx, q)
			return row, ok, true, err
		}
		entry = f.entry
		if ids, err = r.parseLookupEntry(keys.Unique, entry); err != nil {
			return row, false, true, fmt.Errorf("readthrough: decode %s: %w", q.key, err)
		}
	}
	if len(ids) == 0 {
		return row, false, true, nil
	}
	row, ok, err = r.Get(ctx, ids[0])
	if err != nil {
		return row, false, true, err
	}
	if ok && (r.matches(ctx, q, &row) || testhooks.Unchecked(ctx)) {
		return row, true, true, nil
	}
	r.staleLookup(ctx, q, entry)
	var zero T
	return zero, false, false, nil
}

// cachedLookup reads q's entry from Redis and the ids it names; cached is false for
// no entry or an undecodable one (deleted and counted). The error is Redis'. While
// the model misses (combined) it reads nothing, and cached is false: the fill reads
// the entry or takes its lease in one round trip (fillLookup).
func (r *Repository[T]) cachedLookup(ctx context.Context, q lookupQuery) (entry []byte, ids []any, cached bool, err error) {
	if entry, ids, hit := r.nearLookupGet(q.key); hit {
		return entry, ids, true, nil
	}
	if r.combined(ctx) {
		return nil, nil, false, nil
	}
	tk := r.nearTicket(q.key)
	entry, ttl, cached, err := r.getEntry(ctx, q.key)
	if err != nil {
		return nil, nil, false, r.lookupRedisFailed(err)
	}
	if !cached {
		return nil, nil, false, nil
	}
	if ids, err = r.parseLookupEntry(q.def.id.Kind(), entry); err != nil {
		r.undecodableLookup(ctx, q, entry, err)
		return nil, nil, false, nil
	}
	r.nearLookupStore(ctx, tk, q.key, entry, ids, ttl)
	return entry, ids, true, nil
}

// undecodableLookup counts and deletes an entry of q that parseLookupEntry refused
// with err, if it still holds it.
func (r *Repository[T]) undecodableLookup(ctx context.Context, q lookupQuery, entry []byte, err error) {
	r.stats.decodeErrors.Add(1)
	r.warn("undecodable lookup entry deleted", slog.String("key", q.key.Value()), slog.Any("error", err))
	if derr := r.store.DeleteEntry(ctx, q.key, entry); derr != nil {
		r.redisFailed(derr)
	}
}

// lookupCount counts a read of q's entry that hit or missed, in the lookup's stats and
// in the model's miss score (flights.combine), as Get's reads are.
func (r *Repository[T]) lookupCount(q lookupQuery, hit bool) {
	s := &r.stats.unique
	if q.def.id.Kind() == keys.List {
		s = &r.stats.list
	}
	if hit {
		s.hits.Add(1)
		r.flights.hit()
		return
	}
	s.misses.Add(1)
	r.flights.missed()
}

// lookupRedisFailed counts a failed Redis read; lookups then read Postgres (no
// write-back model has lookups).
func (r *Repository[T]) lookupRedisFailed(err error) error {
	r.redisFailed(err)
	return err
}

// staleLookup counts and deletes an entry the check on read found stale, if it still
// holds what was read.
func (r *Repository[T]) staleLookup(ctx context.Context, q lookupQuery, entry []byte) {
	if q.def.id.Kind() == keys.Unique {
		r.stats.unique.stale.Add(1)
	} else {
		r.stats.list.stale.Add(1)
	}
	if err := r.store.DeleteEntry(ctx, q.key, entry); err != nil {
		r.redisFailed(err)
	}
	r.nearDrop(q.key)
}

// Invalidate deletes the entries of these values (as Get takes them) and voids fills
// in progress, as the invalidator does when a row takes the values. Writes through
// the library do this themselves; call it after writes that no invalidator sees.
func (u *UniqueLookup[T]) Invalidate(ctx context.Context, vals ...any) error {
	if u.err != nil {
		return u.err
	}
	return u.r.invalidateLookup(ctx, u.def, u.perm, vals)
}

// Key returns the Redis key of the entry of val (as Get takes it), for inspection and
// tests.
func (u *UniqueLookup[T]) Key(val any) (string, error) {
	if u.err != nil {
		return "", u.err
	}
	q, err := u.r.query(u.def, u.perm, val)
	return q.key.Value(), err
}

func (r *Repository[T]) invalidateLookup(ctx context.Context, def *lookupDef, perm []int, vals []any) error {
	ks := make([]keys.Key, len(vals))
	for i, v := range vals {
		q, err := r.query(def, perm, v)
		if err != nil {
			return err
		}
		ks[i] = q.key
	}
	err := r.store.Invalidate(ctx, ks...)
	r.nearDrop(ks...)
	if err != nil {
		return fmt.Errorf("readthrough: invalidate %s lookup %s of %s: %w", def.id.Kind(), def.id, r.model.schema.Name, err)
	}
	return nil
}
