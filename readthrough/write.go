package readthrough

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"

	"gorm.io/gorm/clause"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/writepolicy"
)

// op names a write, for errors.
type op string

const (
	opCreate op = "create"
	opSave   op = "save"
	opDelete op = "delete"
)

// Create inserts row (GORM's Create: a zero serial key is filled in by Postgres) and,
// once the insert committed, applies the model's write policy to its cache entry,
// which clears a cached "no such row". Under write-back, Create is journaled as an
// upsert, like Save: whether the key already exists is not checked.
//
// The error is Postgres' (the write did not happen) or, under write-back, Redis'
// (see Save). A Redis failure after the commit is not returned: the write happened;
// the failure is counted in Stats.Errors and logged, and the row's stale entry, if
// any, is left to the invalidator and the entry's TTL.
func (r *Repository[T]) Create(ctx context.Context, row *T) error {
	return r.write(ctx, row, opCreate)
}

// Save writes the whole row (GORM's Save: an update of every column, or an insert
// when the key is zero or the row does not exist) and, once that committed, applies
// the model's write policy:
//
//   - writepolicy.Invalidate deletes the row's cache entry;
//   - writepolicy.WriteThrough deletes it and fills it again from Postgres, fenced,
//     so concurrent writers leave the last commit's row or nothing;
//   - writepolicy.WriteBack does not touch Postgres: Save returns once the write is
//     journaled in Redis and is the row's cached value; a writeback.Flusher applies
//     it later. The row's primary key must be set (ErrZeroKey otherwise). Fields
//     tagged autoCreateTime/autoUpdateTime are set as GORM would. The error is Redis'
//     when it is down: then nothing was written.
//
// Inside a transaction (In), the cache effects wait for the commit. A Redis failure
// after a commit is counted and logged, not returned (see Create).
func (r *Repository[T]) Save(ctx context.Context, row *T) error {
	return r.write(ctx, row, opSave)
}

// Delete deletes the row whose primary key is id (GORM's Delete, soft deletes
// included) and, once that committed, applies the model's write policy: the next read
// finds no row. Deleting a row that does not exist is not an error. Under write-back
// the delete is journaled like a Save, and reads return no row until and after the
// flusher deletes it in Postgres.
//
// For a model with a gorm.DeletedAt field, Delete soft-deletes (sets deleted_at where
// it is NULL, as GORM does) under every policy, and through WithDB(db.Unscoped()) it
// deletes the row. Reads in the default scope then find no row; unscoped reads find
// it with its deleted_at, from the same cache entry. Under write-back a soft delete
// journaled over a write of the row still pending carries that write, so the flush
// applies both; over a pending write made by another schema version of the model it
// returns ErrOtherVersionPending and writes nothing.
func (r *Repository[T]) Delete(ctx context.Context, id any) (err error) {
	ctx, end := r.startOp(ctx, OpDelete)
	defer func() { end(writeOutcome(err), err) }()
	k, err := r.model.key(id)
	if err != nil {
		return err
	}
	if r.opts.WritePolicy == writepolicy.WriteBack {
		return r.deleteBack(ctx, k, id)
	}
	if err := r.checkTx(opDelete); err != nil {
		return err
	}
	vals, err := r.idValues(id)
	if err != nil {
		return err
	}
	q := r.db.WithContext(ctx)
	for i, f := range r.model.pk {
		q = q.Where(clause.Eq{Column: clause.Column{Table: clause.CurrentTable, Name: f.DBName}, Value: vals[i]})
	}
	if err := q.Delete(new(T)).Error; err != nil {
		return fmt.Errorf("readthrough: delete %s %v: %w", r.model.schema.Name, id, err)
	}
	r.committed(ctx, k, id)
	return nil
}

func (r *Repository[T]) write(ctx context.Context, row *T, o op) (err error) {
	ctx, end := r.startOp(ctx, o.observed())
	defer func() { end(writeOutcome(err), err) }()
	if row == nil {
		return fmt.Errorf("readthrough: %s %s: nil row", o, r.model.schema.Name)
	}
	if r.opts.WritePolicy == writepolicy.WriteBack {
		return r.saveBack(ctx, row, o)
	}
	if err := r.checkTx(o); err != nil {
		return err
	}
	q := r.db.WithContext(ctx)
	if o == opCreate {
		q = q.Create(row)
	} else {
		q = q.Save(row)
	}
	if q.Error != nil {
		return fmt.Errorf("readthrough: %s %s: %w", o, r.model.schema.Name, q.Error)
	}
	rv := reflect.ValueOf(row).Elem()
	k, err := r.model.rowKey(ctx, rv)
	if err != nil {
		// The write committed, but its key cannot be built: nothing can be cached
		// under it either, and the invalidator handles the row by its change.
		return fmt.Errorf("readthrough: %s %s: written, but %w", o, r.model.schema.Name, err)
	}
	// The row may have entered the lookup entries its values name (see lookup.go).
	r.committed(ctx, k, r.model.id(ctx, rv), r.writtenLookupKeys(ctx, rv)...)
	return nil
}

// checkTx refuses writes in a transaction whose commit the repository cannot see.
func (r *Repository[T]) checkTx(o op) error {
	if r.inTx && r.tx == nil {
		return fmt.Errorf("%w: %s %s through WithDB(tx): use readthrough.Transaction and In(tx), or In(readthrough.WrapTx(tx)) and AfterCommit",
			ErrUntrackedTx, o, r.model.schema.Name)
	}
	return nil
}

// committed applies the write policy to the row's entry now, or, in a transaction,
// after it commits; the lookup entries lks are deleted with it.
func (r *Repository[T]) committed(ctx context.Context, k keys.Key, id any, lks ...keys.Key) {
	out := r.clone()
	out.db, out.inTx, out.tx = r.base, false, nil
	effect := func(ctx context.Context) { out.afterCommit(ctx, k, id, lks) }
	if r.tx != nil {
		// One effect per row and lookup entries: two writes of a row in one
		// transaction with other lookup values must both delete theirs.
		name := k.Value()
		for _, lk := range lks {
			name += "\x00" + lk.Value()
		}
		r.tx.onCommit(name, effect, &r.stats.writes)
		return
	}
	r.stats.writes.Add(1)
	// The write committed: its cache effects run even if the caller gives up now.
	effect(context.WithoutCancel(ctx))
}

// afterCommit deletes the row's entry and, under write-through, fills it again.
func (r *Repository[T]) afterCommit(ctx context.Context, k keys.Key, id any, lks []keys.Key) {
	testhooks.AfterCommit(ctx, k.Value())
	err := r.store.Invalidate(ctx, append([]keys.Key{k}, lks...)...)
	r.nearDrop(k) // after Redis: a read that missed the drop reads Redis after it
	r.nearDrop(lks...)
	if err != nil {
		r.stats.errors.Add(1)
		r.warn("write committed, but its cache entry could not be deleted; the invalidator and the entry's TTL will remove it",
			slog.String("key", k.Value()), slog.Any("error", err))
		return
	}
	r.stats.invalidations.Add(1)
	if r.opts.WritePolicy == writepolicy.WriteThrough {
		r.refill(ctx, k, id)
	}
}

// refill is write-through's fill: the row is read from Postgres under a lease taken
// after the invalidation, never taken from the caller (see package writepolicy). When
// the lease is not free, a reader's fill, begun after the invalidation and so reading
// after the commit, does the work.
func (r *Repository[T]) refill(ctx context.Context, k keys.Key, id any) {
	leased := r.flights.clock.Add(1)
	lease, err := r.store.TakeLease(ctx, r.reg, k, r.opts.FenceDuration)
	if err != nil {
		r.redisFailed(err)
		return
	}
	if lease.State != store.Acquired {
		return
	}
	if _, err := r.fillLeased(ctx, k, id, lease.Token, leased); err != nil {
		r.warn("write committed, but filling its cache entry failed; the next read loads it",
			slog.String("key", k.Value()), slog.Any("error", err))
	}
}

// id returns the id of a row as Get takes it: the key's value, or []any of them.
func (m *model) id(ctx context.Context, rv reflect.Value) any {
	if len(m.pk) == 1 {
		v, _ := m.pk[0].ValueOf(ctx, rv)
		return v
	}
	vals := make([]any, len(m.pk))
	for i, f := range m.pk {
		vals[i], _ = f.ValueOf(ctx, rv)
	}
	return vals
}
