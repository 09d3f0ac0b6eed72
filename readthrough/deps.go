package readthrough

import (
	"context"

	"github.com/pgcache/pgcache/keys"
)

// DependencyRecorder is told which cache entries a read is about to read, so that
// whatever the caller makes of them (an HTTP response: see package httpcache) can be
// dropped when one of them changes. Reads through a Repository (Get, GetMany,
// By(...).Get and GetMany, ListBy(...).Get) with a context from
// WithDependencyRecorder call Depend before they read, with the keys of the rows,
// lookup entries or lists they read, and the model's key space (for its table).
// Such reads skip the near cache: a row served from the in-process tier may be older
// than what Redis holds by the tier's notification delay, which a response could then
// keep for its whole lifetime; they read Redis (or Postgres) instead.
//
// Depend must be safe for concurrent use, and should not fail the read: a recorder
// that could not record makes its own result uncacheable instead.
type DependencyRecorder interface {
	Depend(ctx context.Context, space keys.Space, ks []keys.Key)
	// Unrecordable is called before a read whose rows cannot be named before it
	// reads them: a lookup or list read from Postgres by its values (inside a
	// transaction, through WithDB(db.Unscoped()), a list longer than ListCap, Redis
	// failing). What the caller makes of the read must not be cached.
	Unrecordable(ctx context.Context, space keys.Space)
}

type recorderKey struct{}

// WithDependencyRecorder returns a context whose reads through a Repository tell rec
// what they read (see DependencyRecorder).
func WithDependencyRecorder(ctx context.Context, rec DependencyRecorder) context.Context {
	return context.WithValue(ctx, recorderKey{}, rec)
}

// dependencyRecorder returns ctx's recorder, or nil: the one cost reads without a
// recorder pay.
func dependencyRecorder(ctx context.Context) DependencyRecorder {
	rec, _ := ctx.Value(recorderKey{}).(DependencyRecorder)
	return rec
}

// recorded tells ctx's recorder, if any, that ks are about to be read, and returns
// the repository to read them through: r itself without a recorder, else r without
// its near tier.
func (r *Repository[T]) recorded(ctx context.Context, ks ...keys.Key) *Repository[T] {
	rec := dependencyRecorder(ctx)
	if rec == nil {
		return r
	}
	rec.Depend(ctx, r.model.space, ks)
	if r.near == nil {
		return r
	}
	c := r.clone()
	c.near = nil
	return c
}

// recordedIDs is recorded for the rows with these ids; a bad id is left to the read
// to report.
func (r *Repository[T]) recordedIDs(ctx context.Context, ids ...any) *Repository[T] {
	if dependencyRecorder(ctx) == nil {
		return r
	}
	ks := make([]keys.Key, 0, len(ids))
	for _, id := range ids {
		if k, err := r.model.key(id); err == nil {
			ks = append(ks, k)
		}
	}
	return r.recorded(ctx, ks...)
}

// recording reports whether ctx has a recorder: lookups then read their rows through
// Get and GetMany, which record them, rather than use the rows their fill loaded.
func recording(ctx context.Context) bool { return dependencyRecorder(ctx) != nil }

// unrecordable tells ctx's recorder, if any, that a read it cannot record follows.
func (r *Repository[T]) unrecordable(ctx context.Context) {
	if rec := dependencyRecorder(ctx); rec != nil {
		rec.Unrecordable(ctx, r.model.space)
	}
}
