package gormcache

import (
	"context"
	"errors"
	"reflect"

	"gorm.io/gorm/schema"

	"github.com/pgcache/pgcache/readthrough"
)

// lookupOf is one of a model's registered lookups (readthrough.ModelOptions.Unique and
// Lists), as the plugin's writes invalidate it.
type lookupOf struct {
	fields []*schema.Field // in the order registered, which is the order of its values
	// invalidate deletes the entries of these values (one per row: a value, or []any).
	invalidate func(ctx context.Context, vals []any) error
}

// withLookups adds to m the model's lookups: the single-column unique ones answer
// queries by their column (m.unique), and every lookup is invalidated after a write
// (m.lookups).
func withLookups[T any](m *model, repo *readthrough.Repository[T], opts readthrough.ModelOptions) {
	add := func(names []string, invalidate func(context.Context, ...any) error) []*schema.Field {
		fields := make([]*schema.Field, len(names))
		for i, n := range names {
			fields[i] = m.sch.LookUpField(n) // Register checked that it exists
		}
		m.lookups = append(m.lookups, lookupOf{fields: fields,
			invalidate: func(ctx context.Context, vals []any) error { return invalidate(ctx, vals...) }})
		return fields
	}
	for _, names := range opts.Unique {
		by := repo.By(names...)
		fields := add(names, by.Invalidate)
		if len(fields) != 1 {
			continue // the analysis of queries serves single-column lookups
		}
		if m.unique == nil {
			m.unique = make(map[string]columnLookup)
		}
		m.unique[fields[0].DBName] = columnLookup{field: fields[0],
			get: func(ctx context.Context, value any) (reflect.Value, bool, error) {
				row, ok, err := by.Get(ctx, value)
				return reflect.ValueOf(&row).Elem(), ok, err
			}}
	}
	for _, names := range opts.Lists {
		add(names, repo.ListBy(names...).Invalidate)
	}
}

// invalidateLookups deletes the lookup entries that the rows (a []T, as read after the
// commit) name by their values: a row that entered an entry (a value inserted or
// changed to it, a row restored from a soft delete) must not be missed by a read after
// the write returned, and no worker may have seen the commit yet. A row that left an
// entry needs nothing: lookups check the rows they return.
func (m *model) invalidateLookups(ctx context.Context, rows reflect.Value) error {
	var errs []error
	for _, l := range m.lookups {
		vals := make([]any, 0, rows.Len())
		for i := range rows.Len() {
			row := rows.Index(i)
			if len(l.fields) == 1 {
				v, zero := l.fields[0].ValueOf(ctx, row)
				if !zero || v != nil {
					vals = append(vals, v)
				}
				continue
			}
			vs := make([]any, len(l.fields))
			for j, f := range l.fields {
				vs[j], _ = f.ValueOf(ctx, row)
			}
			vals = append(vals, vs)
		}
		if len(vals) > 0 {
			errs = append(errs, l.invalidate(ctx, vals))
		}
	}
	return errors.Join(errs...)
}
