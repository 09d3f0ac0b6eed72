package readthrough

import (
	"context"
	"fmt"

	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
)

// ListLookup reads the rows of T whose fields hold given values (a has-many list: the
// items of an order), registered in ModelOptions.Lists. Get it from
// Repository.ListBy. It is safe for concurrent use.
type ListLookup[T any] struct {
	r    *Repository[T]
	def  *lookupDef
	perm []int
	err  error // ListBy's, returned by every method
}

// ListBy returns the list lookup over the fields named (Go field names or column
// names), registered in ModelOptions.Lists; several fields in any order, which is then
// the order of the values its methods take. An unregistered lookup is not an error
// until its methods return ErrNotRegistered.
//
// A list is cached as its members' primary keys, the rows coming through the cached
// primary-key path: a hit costs two Redis round trips (the entry, then one multi-get
// of the members). Lists longer than ModelOptions.ListCap are read from Postgres.
// Inside a transaction and through WithDB(db.Unscoped()) they read Postgres and cache
// nothing.
func (r *Repository[T]) ListBy(fields ...string) *ListLookup[T] {
	def, perm, err := r.model.lookups.resolve(r.model, keys.List, fields)
	return &ListLookup[T]{r: r, def: def, perm: perm, err: err}
}

// Get returns the visible rows (not soft-deleted) whose fields hold val, ordered by
// primary key (the columns of the table's primary-key index, in its order): val is
// one value, or []any with the values in the order of the fields given to ListBy. A
// nil (NULL) value is refused with ErrNullLookup. Every row returned holds the values:
// a member that moved to another list or was deleted is never returned from a stale
// entry (see lookup.go).
func (l *ListLookup[T]) Get(ctx context.Context, val any) ([]T, error) {
	if l.err != nil {
		return nil, l.err
	}
	r := l.r
	q, err := r.query(l.def, l.perm, val)
	if err != nil {
		return nil, err
	}
	r = r.recorded(ctx, q.key) // deps.go
	if !r.direct() {
		for range 2 {
			rows, done, err := r.listOnce(ctx, q)
			if done || err != nil {
				return rows, err
			}
		}
	}
	r.unrecordable(ctx) // deps.go
	return r.loadByValues(ctx, q, 0)
}

// listOnce answers q through its entry; done is false when the entry was stale (and
// is deleted).
func (r *Repository[T]) listOnce(ctx context.Context, q lookupQuery) (rows []T, done bool, err error) {
	start := r.flights.clock.Load()
	entry, ids, cached, err := r.cachedLookup(ctx, q)
	if err != nil {
		r.unrecordable(ctx) // deps.go
		rows, err = r.loadByValues(ctx, q, 0)
		return rows, true, err
	}
	if cached {
		r.lookupCount(q, true)
	} else {
		f, own, err := r.lookupMiss(ctx, start, q)
		r.lookupCount(q, f.found)
		if err != nil {
			return nil, true, err
		}
		if own && f.rows != nil && !recording(ctx) { // recorded: through GetMany (deps.go)
			// Loaded by the values after this read began: current, and holding them.
			return unbox[T](f.rows), true, nil
		}
		if f.entry == nil { // over the cap, or read without a lease
			r.unrecordable(ctx) // deps.go
			rows, err = r.loadByValues(ctx, q, 0)
			return rows, true, err
		}
		entry = f.entry
		if ids, err = r.parseLookupEntry(keys.List, entry); err != nil {
			return nil, true, fmt.Errorf("readthrough: decode %s: %w", q.key, err)
		}
	}
	if len(ids) == 0 {
		return []T{}, true, nil
	}
	rows, err = r.GetMany(ctx, ids...)
	if err != nil {
		return nil, true, err
	}
	// GetMany returns the members that exist and are visible, in the entry's order:
	// one missing, or one holding other values, makes the entry stale.
	fresh := len(rows) == len(ids)
	for i := 0; fresh && i < len(rows) && !testhooks.Unchecked(ctx); i++ {
		fresh = r.matches(ctx, q, &rows[i])
	}
	if fresh {
		return rows, true, nil
	}
	r.staleLookup(ctx, q, entry)
	return nil, false, nil
}

func unbox[T any](rows []any) []T {
	out := make([]T, len(rows))
	for i, row := range rows {
		out[i] = *row.(*T)
	}
	return out
}

// Invalidate deletes the entries of these values (as Get takes them) and voids fills
// in progress, as the invalidator does when a row takes the values. Writes through
// the library do this themselves; call it after writes that no invalidator sees.
func (l *ListLookup[T]) Invalidate(ctx context.Context, vals ...any) error {
	if l.err != nil {
		return l.err
	}
	return l.r.invalidateLookup(ctx, l.def, l.perm, vals)
}

// Key returns the Redis key of the entry of val (as Get takes it), for inspection and
// tests.
func (l *ListLookup[T]) Key(val any) (string, error) {
	if l.err != nil {
		return "", l.err
	}
	q, err := l.r.query(l.def, l.perm, val)
	return q.key.Value(), err
}
