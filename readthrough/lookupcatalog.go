package readthrough

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/writepolicy"
)

// Registering lookups. What Register checks, and why:
//
//   - Each field names a column of the table (by Go field name or column name, as
//     GORM's schema.LookUpField finds it), and the column's catalog type has one
//     canonical spelling (keys.KindOfType of its base type; enums as text): an entry's
//     key is built from the caller's values here and from the change stream's text on
//     the change side, and the two must agree, as for primary keys.
//   - A unique lookup has a unique index over exactly its columns, partial indexes
//     allowed, and is not the primary key (read that with Get). When several visible
//     rows hold the values anyway (a partial index whose predicate leaves them out, an
//     index that is not valid yet), the lookup returns ErrNotUnique, never one of them.
//   - Write-back models have none: their pending writes are not in Postgres, so an
//     entry filled from Postgres would not list them.

// lookups are a model's registered lookups.
type lookups struct {
	byID map[keys.Lookup]*lookupDef
	all  []*lookupDef
	// orderBy are the primary-key columns in the order of the table's primary-key
	// index: lists are ordered by them.
	orderBy []string
	cap     int
}

// lookupDef is one registered lookup.
type lookupDef struct {
	id keys.Lookup
	// fields and kinds are the lookup's columns in the order its keys take their
	// values (keys.Lookup.Columns: the order of the column names).
	fields []*schema.Field
	kinds  []keys.Kind
}

// parseLookups checks and builds the lookups opts registers for model m.
func parseLookups(db *gorm.DB, m *model, opts ModelOptions) (*lookups, error) {
	if len(opts.Unique) == 0 && len(opts.Lists) == 0 {
		return nil, nil
	}
	if opts.WritePolicy == writepolicy.WriteBack {
		return nil, fmt.Errorf("%w: model %s: lookups (Unique, Lists) are not available under write-back: a pending write is not in Postgres, so an entry filled from Postgres would miss it; use writepolicy.Invalidate or WriteThrough, or drop Unique and Lists",
			ErrConfig, m.schema.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), catalogTimeout)
	defer cancel()
	cat, err := readLookupCatalog(db.WithContext(ctx), m)
	if err != nil {
		return nil, err
	}
	ls := &lookups{byID: make(map[keys.Lookup]*lookupDef), orderBy: cat.pk, cap: opts.ListCap}
	for kind, specs := range map[keys.LookupKind][][]string{keys.Unique: opts.Unique, keys.List: opts.Lists} {
		for _, names := range specs {
			def, err := cat.define(m, kind, names)
			if err != nil {
				return nil, err
			}
			if _, dup := ls.byID[def.id]; dup {
				return nil, fmt.Errorf("%w: model %s: the %s lookup (%s) is registered twice: drop one", ErrConfig, m.schema.Name, kind, strings.Join(names, ", "))
			}
			ls.byID[def.id] = def
			ls.all = append(ls.all, def)
		}
	}
	return ls, nil
}

// resolve finds the lookup of kind over the fields or columns names, and the order
// of the caller's values: perm[j] is the index among names of the key's column j.
func (ls *lookups) resolve(m *model, kind keys.LookupKind, names []string) (*lookupDef, []int, error) {
	cols, err := columnsOf(m, names)
	if err != nil {
		return nil, nil, err
	}
	id, err := keys.NewLookup(kind, cols...)
	if err != nil {
		return nil, nil, fmt.Errorf("readthrough: %s: %w", m.schema.Name, err)
	}
	var def *lookupDef
	if ls != nil {
		def = ls.byID[id]
	}
	if def == nil {
		option := map[keys.LookupKind]string{keys.Unique: "Unique", keys.List: "Lists"}[kind]
		return nil, nil, fmt.Errorf("%w: model %s has no %s lookup by (%s): add it to ModelOptions.%s",
			ErrNotRegistered, m.schema.Name, kind, strings.Join(names, ", "), option)
	}
	return def, keys.Order(cols), nil
}

// columnsOf returns the columns of the fields or columns names.
func columnsOf(m *model, names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: model %s: a lookup needs at least one field", ErrConfig, m.schema.Name)
	}
	cols := make([]string, len(names))
	for i, n := range names {
		f := m.schema.LookUpField(n)
		if f == nil || f.DBName == "" {
			return nil, fmt.Errorf("%w: model %s has no field or column %q mapped to a column: name a field by its Go name or its column",
				ErrConfig, m.schema.Name, n)
		}
		cols[i] = f.DBName
	}
	return cols, nil
}

// lookupCatalog is what the catalog says of a table's columns and unique indexes.
type lookupCatalog struct {
	table string // qualified, for errors
	// columns: each column's Kind, and false for a type without one canonical spelling.
	kinds    map[string]keys.Kind
	types    map[string]string
	canonCol map[string]bool
	pk       []string
	// unique indexes (not the primary key): their key columns, sorted, and whether
	// the index is partial.
	unique []uniqueIndex
}

type uniqueIndex struct {
	cols    []string
	partial bool
}

// define checks the lookup of kind over the fields names and builds it.
func (cat *lookupCatalog) define(m *model, kind keys.LookupKind, names []string) (*lookupDef, error) {
	cols, err := columnsOf(m, names)
	if err != nil {
		return nil, err
	}
	id, err := keys.NewLookup(kind, cols...)
	if err != nil {
		return nil, fmt.Errorf("%w: model %s: %s lookup (%s): %v", ErrConfig, m.schema.Name, kind, strings.Join(names, ", "), err)
	}
	def := &lookupDef{id: id}
	for _, c := range id.Columns() {
		typ, ok := cat.types[c]
		if !ok {
			return nil, fmt.Errorf("%w: model %s: %s lookup (%s): table %s has no column %s: migrate the table, or fix the field's column name",
				ErrConfig, m.schema.Name, kind, strings.Join(names, ", "), cat.table, c)
		}
		if !cat.canonCol[c] {
			return nil, fmt.Errorf("%w: model %s: %s lookup (%s): column %s has type %s, whose values Postgres spells in more than one way (or compares loosely), so an entry's key built from the caller's value could differ from the one the change stream gives: look up by an integer, text, varchar, char(n), uuid, numeric, bytea or enum column",
				ErrConfig, m.schema.Name, kind, strings.Join(names, ", "), c, typ)
		}
		def.fields = append(def.fields, m.schema.LookUpField(c))
		def.kinds = append(def.kinds, cat.kinds[c])
	}
	if kind == keys.Unique {
		if err := cat.checkUnique(m, id.Columns(), names); err != nil {
			return nil, err
		}
	}
	return def, nil
}

// checkUnique checks that cols (sorted) are those of a unique index, not the
// primary key's.
func (cat *lookupCatalog) checkUnique(m *model, cols, names []string) error {
	pk := slices.Sorted(slices.Values(cat.pk))
	if slices.Equal(pk, cols) {
		return fmt.Errorf("%w: model %s: the unique lookup (%s) is the primary key: read it with Get, and drop it from Unique",
			ErrConfig, m.schema.Name, strings.Join(names, ", "))
	}
	for _, ix := range cat.unique {
		if slices.Equal(ix.cols, cols) {
			return nil
		}
	}
	return fmt.Errorf("%w: model %s: the unique lookup (%s): table %s has no unique index over exactly (%s), so several rows could hold one value: add one (CREATE UNIQUE INDEX ON %s (%s), or a uniqueIndex tag), or register the fields in Lists",
		ErrConfig, m.schema.Name, strings.Join(names, ", "), cat.table, strings.Join(cols, ", "), cat.table, strings.Join(cols, ", "))
}

// readLookupCatalog reads the columns and unique indexes of m's table.
func readLookupCatalog(db *gorm.DB, m *model) (*lookupCatalog, error) {
	ref := quoteRef(m.pgSchema, m.pgTable)
	cat := &lookupCatalog{table: keys.QualifiedTable(m.pgSchema, m.pgTable), kinds: map[string]keys.Kind{},
		types: map[string]string{}, canonCol: map[string]bool{}}
	rows, err := db.Raw(`
		SELECT a.attname::text, format_type(b.oid, NULL), b.typtype::text
		FROM pg_attribute a JOIN pg_type bt ON bt.oid = a.atttypid JOIN pg_type b ON b.oid = coalesce(nullif(bt.typbasetype, 0), bt.oid)
		WHERE a.attrelid = to_regclass(?) AND a.attnum > 0 AND NOT a.attisdropped`, ref).Rows()
	if err != nil {
		return nil, fmt.Errorf("readthrough: read the columns of %s: %w", cat.table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var col, typ, typtype string
		if err := rows.Scan(&col, &typ, &typtype); err != nil {
			return nil, fmt.Errorf("readthrough: read the columns of %s: %w", cat.table, err)
		}
		k, ok := keys.KindOfType(typ)
		if typtype == "e" { // an enum: its values print as they are spelled
			k, ok = keys.Text, true
		}
		cat.types[col], cat.kinds[col], cat.canonCol[col] = typ, k, ok
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("readthrough: read the columns of %s: %w", cat.table, err)
	}
	if err := cat.readIndexes(db, ref); err != nil {
		return nil, err
	}
	return cat, nil
}

// readIndexes reads the table's primary key, in index order, and its unique indexes
// over plain columns.
func (cat *lookupCatalog) readIndexes(db *gorm.DB, ref string) error {
	rows, err := db.Raw(`
		SELECT i.indisprimary, i.indpred IS NOT NULL,
		  (SELECT json_agg(a.attname::text ORDER BY k.n) FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n)
		     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE k.n <= i.indnkeyatts)::text
		FROM pg_index i WHERE i.indrelid = to_regclass(?) AND i.indisunique AND i.indexprs IS NULL`, ref).Rows()
	if err != nil {
		return fmt.Errorf("readthrough: read the indexes of %s: %w", cat.table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var primary, partial bool
		var colsJSON string
		if err := rows.Scan(&primary, &partial, &colsJSON); err != nil {
			return fmt.Errorf("readthrough: read the indexes of %s: %w", cat.table, err)
		}
		var cols []string
		if err := json.Unmarshal([]byte(colsJSON), &cols); err != nil {
			return fmt.Errorf("readthrough: read the indexes of %s: %w", cat.table, err)
		}
		if primary {
			cat.pk = cols
			continue
		}
		slices.Sort(cols)
		cat.unique = append(cat.unique, uniqueIndex{cols: cols, partial: partial})
	}
	return rows.Err()
}
