package readthrough

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/writeback"
)

// Soft deletes (gorm.DeletedAt).
//
// The cache holds a row as Postgres holds it: fills load unscoped, so a soft-deleted row
// is cached with its deleted_at, and the soft-delete scope is applied when an entry is
// turned into a row. A repository reads in the scope of its *gorm.DB: the default
// scope leaves soft-deleted rows out, as GORM's First does, and one bound with
// WithDB(db.Unscoped()) returns them. Both share the row's one entry, which the
// invalidator deletes by primary key like any other.
//
// A write-back Delete of such a model is journaled as a soft delete: the flusher sets
// deleted_at where it is NULL, as GORM's Delete does. Its entry, built in the journal
// script from the row's pending write (see store.SoftDelete), is
//
//	's' <deleted_at as Unix microseconds> '\n' <the pending write's entry, or nothing>
//
// which scoped reads answer as no row. Unscoped reads decode the pending write, or
// read the row from Postgres when there was none (Postgres then held every write of
// the row), and set deleted_at where it is not set.

// entrySoftDelete starts the entry of a write-back soft delete.
const entrySoftDelete = 's'

// writeBackVersion is the version in the keys of write-back models: their keys are
// shared by every schema version, so that a reader of one version sees the writes
// pending under another (during a rolling deploy); each entry starts with its
// version instead (see Model.Entry in internal/store).
const writeBackVersion = "_wb"

var deletedAtType = reflect.TypeOf(gorm.DeletedAt{})

// softDeleteField returns the model's gorm.DeletedAt field, nil if it has none, or an
// error for soft-delete setups whose scope the cache cannot apply to a cached row.
func softDeleteField(sch *schema.Schema) (*schema.Field, error) {
	var found *schema.Field
	for _, f := range sch.Fields {
		t := f.FieldType
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t != deletedAtType {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("%w: model %s has two gorm.DeletedAt fields (%s, %s); GORM applies one: keep one", ErrConfig, sch.Name, found.Name, f.Name)
		}
		if _, ok := f.TagSettings["ZEROVALUE"]; ok {
			return nil, fmt.Errorf("%w: model %s: field %s has a zeroValue tag, which the cache does not support: a deleted row is one whose deleted_at is not NULL; drop the tag",
				ErrConfig, sch.Name, f.Name)
		}
		found = f
	}
	for _, c := range sch.QueryClauses {
		if _, ok := c.(gorm.SoftDeleteQueryClause); !ok {
			return nil, fmt.Errorf("%w: model %s: a field adds the query clause %T (a soft-delete plugin?), which the cache cannot apply to cached rows: use gorm.DeletedAt, or do not cache the model",
				ErrConfig, sch.Name, c)
		}
	}
	for _, c := range sch.DeleteClauses {
		if _, ok := c.(gorm.SoftDeleteDeleteClause); !ok {
			return nil, fmt.Errorf("%w: model %s: a field adds the delete clause %T (a soft-delete plugin?), which write-back and the cache do not know: use gorm.DeletedAt, or do not cache the model",
				ErrConfig, sch.Name, c)
		}
	}
	return found, nil
}

// deletedAt returns the value of the soft-delete field f of row rv.
func deletedAt(ctx context.Context, f *schema.Field, rv reflect.Value) gorm.DeletedAt {
	switch v, _ := f.ValueOf(ctx, rv); v := v.(type) {
	case gorm.DeletedAt:
		return v
	case *gorm.DeletedAt:
		if v != nil {
			return *v
		}
	}
	return gorm.DeletedAt{}
}

// unscoped reports whether the repository reads soft-deleted rows too.
func (r *Repository[T]) unscoped() bool {
	return r.model.softDelete == nil || r.db.Statement.Unscoped
}

// visible reports whether a row as Postgres holds it is in the repository's scope.
func (r *Repository[T]) visible(ctx context.Context, row *T) bool {
	return r.unscoped() || !deletedAt(ctx, r.model.softDelete, reflect.ValueOf(row).Elem()).Valid
}

// inScope returns the row of a cached entry in the repository's scope, counting a hit
// or, for a soft-deleted row in the default scope, a negative hit.
// It takes the row by pointer so that a row decode already put on the heap is not
// copied to another.
func (r *Repository[T]) inScope(ctx context.Context, row *T) (T, bool, error) {
	if !r.visible(ctx, row) {
		r.stats.negativeHits.Add(1)
		var zero T
		return zero, false, nil
	}
	r.stats.hits.Add(1)
	return *row, true, nil
}

// all returns the repository reading every row, soft-deleted ones included: fills
// cache rows as Postgres holds them, whoever asks.
func (r *Repository[T]) all() *Repository[T] {
	if r.unscoped() {
		return r
	}
	c := r.clone()
	c.db = r.db.Unscoped()
	return c
}

// errOtherVersion reports a cached entry written by another schema version of a
// write-back model: a miss for this one.
var errOtherVersion = errors.New("readthrough: entry of another schema version")

// cachedRow turns an entry read from Redis into a row in the repository's scope,
// counting hits; the error makes it a miss (another version's entry, an undecodable
// one, which decode deletes, or a failed load of a soft-deleted row).
func (r *Repository[T]) cachedRow(ctx context.Context, k keys.Key, id any, entry []byte) (T, bool, error) {
	inner, mine := r.open(entry)
	if !mine {
		var zero T
		return zero, false, errOtherVersion
	}
	if len(inner) > 0 && inner[0] == entrySoftDelete {
		row, ok, err := r.softDeleted(ctx, k, id, inner)
		switch {
		case err != nil:
		case ok:
			r.stats.hits.Add(1)
		default:
			r.stats.negativeHits.Add(1)
		}
		return row, ok, err
	}
	return r.decode(ctx, k, inner)
}

// softDeleted answers a read of a row whose pending write-back write is a soft delete.
func (r *Repository[T]) softDeleted(ctx context.Context, k keys.Key, id any, entry []byte) (row T, ok bool, err error) {
	at, base, err := parseSoftDelete(entry)
	if err != nil {
		return row, false, fmt.Errorf("readthrough: decode %s: %w", k, err)
	}
	if !r.unscoped() {
		return row, false, nil
	}
	if len(base) == 0 {
		// No write was pending when the row was deleted: Postgres held every write of
		// it then, and it gets none but this one until a newer write replaces the entry.
		row, ok, err = r.load(ctx, id)
	} else {
		inner, mine := r.open(base)
		if !mine || len(inner) == 0 || inner[0] != entryRow {
			return row, false, fmt.Errorf("readthrough: decode %s: soft delete over an entry of another kind or version", k)
		}
		err = r.decodeRow(ctx, inner[1:], &row)
		ok = true
	}
	if err != nil || !ok {
		return row, false, err
	}
	rv := reflect.ValueOf(&row).Elem()
	if !deletedAt(ctx, r.model.softDelete, rv).Valid {
		if err := setDeletedAt(ctx, r.model.softDelete, rv, at); err != nil {
			return row, false, fmt.Errorf("readthrough: %s: %w", k, err)
		}
	}
	return row, true, nil
}

func setDeletedAt(ctx context.Context, f *schema.Field, rv reflect.Value, at time.Time) error {
	var v any = gorm.DeletedAt{Time: at, Valid: true}
	if f.FieldType.Kind() == reflect.Pointer {
		v = &gorm.DeletedAt{Time: at, Valid: true}
	}
	if err := f.Set(ctx, rv, v); err != nil {
		return fmt.Errorf("set %s: %w", f.Name, err)
	}
	return nil
}

// parseSoftDelete splits a soft-delete entry into its time and the entry it was made
// over (possibly empty).
func parseSoftDelete(entry []byte) (time.Time, []byte, error) {
	head, base, ok := bytes.Cut(entry[1:], []byte{'\n'})
	us, err := strconv.ParseInt(string(head), 10, 64)
	if !ok || err != nil {
		return time.Time{}, nil, fmt.Errorf("bad soft-delete entry %q", entry[:min(len(entry), 32)])
	}
	return time.UnixMicro(us), base, nil
}

// softDeleteBack journals a write-back Delete of a soft-delete model.
func (r *Repository[T]) softDeleteBack(ctx context.Context, k keys.Key, id any) error {
	vals, err := r.idValues(id)
	if err != nil {
		return err
	}
	f := r.model.softDelete
	// Postgres keeps microseconds: round as it would, so the pending entry and the row
	// once flushed hold the same time.
	at := r.base.NowFunc().Round(time.Microsecond)
	change := writeback.Change{Schema: r.model.pgSchema, Table: r.model.pgTable, Key: r.model.pkNamesList,
		Columns: append(append([]string(nil), r.model.pkNamesList...), f.DBName), Values: make([]any, 0, len(vals)+1),
		Delete: true, SoftDelete: f.DBName}
	for i, v := range vals {
		dv, err := driverValue(v)
		if err != nil {
			return fmt.Errorf("readthrough: write-back delete %s %v: column %s: %w", r.model.schema.Name, id, r.model.pk[i].DBName, err)
		}
		change.Values = append(change.Values, dv)
	}
	change.Values = append(change.Values, at)
	head := string(entrySoftDelete) + strconv.FormatInt(at.UnixMicro(), 10) + "\n"
	ttl, _ := r.ttl([]byte{entryRow})
	outcome, err := r.journal.SoftDelete(ctx, k, head, ttl, change)
	if err == nil && outcome == store.OtherVersionPending {
		err = fmt.Errorf("%w: %s: delete it again once the flusher applied that write (the error is not retried for you, and nothing was written)",
			ErrOtherVersionPending, k)
	}
	return r.journaled(opDelete, err)
}

// seal puts the model's entry envelope (see writeBackVersion) in front of entry.
func (r *Repository[T]) seal(entry []byte) []byte {
	if r.model.envelope == "" {
		return entry
	}
	out := make([]byte, 0, len(r.model.envelope)+len(entry))
	return append(append(out, r.model.envelope...), entry...)
}

// open removes the envelope of an entry written by this model's version; mine is
// false for an entry another version wrote.
func (r *Repository[T]) open(entry []byte) (inner []byte, mine bool) {
	if r.model.envelope == "" {
		return entry, true
	}
	if inner, ok := bytes.CutPrefix(entry, []byte(r.model.envelope)); ok {
		return inner, true
	}
	return nil, false
}

// markUnscopedFills changes the derived schema version of a soft-delete model, so
// that its keys differ from those of builds before fills read unscoped: those cached
// a soft-deleted row as absent, which an unscoped reader must not be told. A pinned
// ModelOptions.Version is left alone.
func (m *model) markUnscopedFills(prefix string, opts ModelOptions) error {
	if m.softDelete == nil || opts.Version != "" {
		return nil
	}
	space, err := keys.NewSpace(prefix, m.space.Table(), m.space.Version()+".u")
	if err != nil {
		return fmt.Errorf("readthrough: model %s: %w", m.schema.Name, err)
	}
	m.space = space
	return nil
}

// setWriteBackKeys moves a write-back model to the key space every version shares;
// its entries start with "@<version>:" instead.
func (m *model) setWriteBackKeys(prefix string) error {
	m.envelope = "@" + m.space.Version() + ":"
	space, err := keys.NewSpace(prefix, m.space.Table(), writeBackVersion)
	if err != nil {
		return fmt.Errorf("readthrough: model %s: %w", m.schema.Name, err)
	}
	m.space = space
	return nil
}
