package readthrough

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/pgcache/pgcache/keys"
)

// table is a model's table as the Postgres catalog describes it. The key of a row must
// be the one the change side builds from the replication stream, which knows the table
// only by its catalog name and its primary key only by the catalog's column names and
// types; so the read side takes them from the catalog too, not from the struct.
type table struct {
	schema, name string
	// pk are the primary key's columns and the Kinds of their values, in the
	// index's order.
	pk    []string
	kinds map[string]keys.Kind
}

// catalogTimeout bounds the catalog queries Register makes.
const catalogTimeout = 10 * time.Second

// lookUpTable finds the table GORM's queries of the model reach: ref is its name as
// GORM writes it (quoted, qualified when the model's table name is), resolved through
// the connection's search_path as GORM's queries are.
func lookUpTable(db *gorm.DB, ref string) (table, error) {
	ctx, cancel := context.WithTimeout(context.Background(), catalogTimeout)
	defer cancel()
	db = db.WithContext(ctx)
	var t table
	var oid int64
	row := db.Raw(`SELECT c.oid::int8, n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass(?)`, ref).Row()
	if row == nil { // GORM's DryRun runs nothing
		return t, fmt.Errorf("%w: Register reads table %s's primary key from the catalog, and the *gorm.DB runs no queries (DryRun): give it a connected one", ErrConfig, ref)
	}
	if err := row.Scan(&oid, &t.schema, &t.name); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return t, fmt.Errorf("%w: table %s does not exist (as the connection's search_path resolves it): create it (AutoMigrate, or your migrations) before Register, which reads its primary key from the catalog", ErrConfig, ref)
		}
		return t, fmt.Errorf("readthrough: look up table %s: %w", ref, err)
	}
	rows, err := db.Raw(`
		SELECT a.attname::text, format_type(coalesce(nullif(bt.typbasetype, 0), bt.oid), NULL), b.typtype::text
		FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, n), pg_attribute a, pg_type bt, pg_type b
		WHERE i.indrelid = ? AND i.indisprimary AND a.attrelid = i.indrelid AND a.attnum = k.attnum
		  AND bt.oid = a.atttypid AND b.oid = coalesce(nullif(bt.typbasetype, 0), bt.oid)
		ORDER BY k.n`, oid).Rows()
	if err != nil {
		return t, fmt.Errorf("readthrough: read the primary key of %s: %w", ref, err)
	}
	defer rows.Close()
	t.kinds = make(map[string]keys.Kind)
	for rows.Next() {
		var col, typ, typtype string
		if err := rows.Scan(&col, &typ, &typtype); err != nil {
			return t, fmt.Errorf("readthrough: read the primary key of %s: %w", ref, err)
		}
		k, ok := keys.KindOfType(typ)
		if typtype == "e" { // an enum: its values print as they are spelled
			k, ok = keys.Text, true
		}
		if !ok {
			return t, fmt.Errorf("%w: table %s: primary-key column %s has type %s, whose values Postgres spells in more than one way (or compares loosely), so a key built from the caller's value could differ from the one the change stream gives: use an integer, text, varchar, char(n), uuid, numeric or bytea key",
				ErrConfig, keys.QualifiedTable(t.schema, t.name), col, typ)
		}
		t.pk = append(t.pk, col)
		t.kinds[col] = k
	}
	if err := rows.Err(); err != nil {
		return t, fmt.Errorf("readthrough: read the primary key of %s: %w", ref, err)
	}
	if len(t.pk) == 0 {
		return t, fmt.Errorf("%w: table %s has no primary key: cached rows are keyed by it, and the change stream names changed rows by it; add one (ALTER TABLE %s ADD PRIMARY KEY (...))",
			ErrConfig, keys.QualifiedTable(t.schema, t.name), ref)
	}
	return t, nil
}

// quoteRef returns a table reference as SQL: each part double-quoted.
func quoteRef(schema, name string) string {
	q := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	if schema == "" {
		return q(name)
	}
	return q(schema) + "." + q(name)
}

// checkPrimaryKey checks that the model's primary-key fields are the table's primary
// key: the change stream keys rows by the table's, so a model keyed otherwise would
// cache rows under keys nothing ever invalidates.
func checkPrimaryKey(model string, fields, pk []string, tableName string) error {
	a, b := slices.Clone(fields), slices.Clone(pk)
	slices.Sort(a)
	slices.Sort(b)
	if !slices.Equal(a, b) {
		return fmt.Errorf("%w: model %s has primary-key fields for columns (%s), but table %s's primary key is (%s): tag the fields of the table's primary key `gorm:\"primaryKey\"` and no others",
			ErrConfig, model, strings.Join(fields, ", "), tableName, strings.Join(pk, ", "))
	}
	return nil
}
