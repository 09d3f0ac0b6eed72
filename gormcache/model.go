package gormcache

import (
	"context"
	"reflect"

	"gorm.io/gorm/schema"

	"github.com/pgcache/pgcache/readthrough"
)

// model is a registered model as the callbacks, which see values as any, use it: its
// schema and its typed repository, captured in closures.
type model struct {
	typ    reflect.Type
	sch    *schema.Schema
	pk     []*schema.Field
	fields []*schema.Field // the fields GORM's scan fills from SELECT *: set on a hit
	refill bool            // write-through: fill rows again after invalidating them

	// get returns the row (a T) with this id, in the repository's default scope.
	get func(ctx context.Context, id any) (reflect.Value, bool, error)
	// getMany returns the rows (a []T) with these ids, in the order of ids.
	getMany func(ctx context.Context, ids []any) (reflect.Value, error)
	// key returns the row's Redis key: a canonical spelling of the id.
	key        func(id any) (string, error)
	invalidate func(ctx context.Context, ids []any) error

	// unique holds the lookups by a unique column other than the key, by column name
	// (see withLookups): queries by such a column are served through them.
	unique map[string]columnLookup
	// lookups are every registered lookup of the model, whose entries its writes
	// invalidate (see invalidateLookups).
	lookups []lookupOf
}

// columnLookup answers a query for the row whose unique column field holds a value.
type columnLookup struct {
	field *schema.Field
	// get returns the row (a T) whose column holds value, in the default scope, read
	// through the cache with the promises of a lookup by key.
	get func(ctx context.Context, value any) (reflect.Value, bool, error)
}

func newModel[T any](sch *schema.Schema, repo *readthrough.Repository[T], refill bool) *model {
	m := &model{typ: sch.ModelType, sch: sch, pk: sch.PrimaryFields, refill: refill}
	for _, name := range sch.DBNames {
		if f := sch.FieldsByDBName[name]; f != nil && f.Readable {
			m.fields = append(m.fields, f)
		}
	}
	m.get = func(ctx context.Context, id any) (reflect.Value, bool, error) {
		row, ok, err := repo.Get(ctx, id)
		return reflect.ValueOf(&row).Elem(), ok, err
	}
	m.getMany = func(ctx context.Context, ids []any) (reflect.Value, error) {
		rows, err := repo.GetMany(ctx, ids...)
		return reflect.ValueOf(rows), err
	}
	m.key = repo.Key
	m.invalidate = func(ctx context.Context, ids []any) error { return repo.Invalidate(ctx, ids...) }
	return m
}

// id returns the id of the row rv (a T) as the repository takes it, and whether every
// key field is set (not its zero value).
func (m *model) id(ctx context.Context, rv reflect.Value) (any, bool) {
	if len(m.pk) == 1 {
		v, zero := m.pk[0].ValueOf(ctx, rv)
		return v, !zero
	}
	vals := make([]any, len(m.pk))
	set := true
	for i, f := range m.pk {
		v, zero := f.ValueOf(ctx, rv)
		vals[i], set = v, set && !zero
	}
	return vals, set
}

// rowIDs returns the ids of the rows in rv: a T, or a slice or array of T or *T. ok is
// false when rv holds something else (a map, say). Rows whose key is not set are left
// out when skipZero.
func (m *model) rowIDs(ctx context.Context, rv reflect.Value, skipZero bool) (ids []any, ok bool) {
	add := func(row reflect.Value) bool {
		for row.Kind() == reflect.Pointer {
			if row.IsNil() {
				return true
			}
			row = row.Elem()
		}
		if row.Type() != m.typ {
			return false
		}
		if id, set := m.id(ctx, row); set || !skipZero {
			ids = append(ids, id)
		}
		return true
	}
	switch rv.Kind() {
	case reflect.Struct:
		return ids, add(rv)
	case reflect.Slice, reflect.Array:
		for i := range rv.Len() {
			if !add(rv.Index(i)) {
				return nil, false
			}
		}
		return ids, true
	}
	return nil, false
}
