package audit

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strings"

	"github.com/pgcache/pgcache/internal/store"
)

type driverValue = driver.Value

// relation is what the auditor knows of a cached table from the catalog: its name
// quoted for SQL and its columns' types.
type relation struct {
	ident string
	types map[string]string
}

// relationOf reads table's quoted name and column types from the catalog, once per
// refresh.
func (a *Auditor) relationOf(ctx context.Context, table string) (*relation, error) {
	if r, ok := a.relations[table]; ok {
		return r, nil
	}
	rows, err := a.db.QueryContext(ctx, `
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid
WHERE c.oid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	r := &relation{types: map[string]string{}}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&r.ident, &name, &typ); err != nil {
			return nil, err
		}
		r.types[name] = typ
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if r.ident == "" {
		return nil, fmt.Errorf("table %s not found", table)
	}
	a.relations[table] = r
	return r, nil
}

// load reads the shape's columns of the row whose key values (canonical text, in the
// key's order) are pk. Each value is cast from text to its column's type, so that
// Postgres parses it as it parses its own output (canonical keys are such text).
func (a *Auditor) load(ctx context.Context, table string, sh store.Shape, pk []string) ([]any, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, a.opts.QueryTimeout)
	defer cancel()
	r, err := a.relationOf(ctx, table)
	if err != nil {
		return nil, false, err
	}
	var q strings.Builder
	q.WriteString("SELECT ")
	for i, c := range sh.Columns {
		if _, ok := r.types[c]; !ok {
			return nil, false, fmt.Errorf("column %s of %s not found", c, table)
		}
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(quoteIdent(c))
	}
	fmt.Fprintf(&q, " FROM %s WHERE ", r.ident)
	args := make([]any, len(pk))
	for i, c := range sh.Key {
		typ, ok := r.types[c]
		if !ok {
			return nil, false, fmt.Errorf("key column %s of %s not found", c, table)
		}
		if i > 0 {
			q.WriteString(" AND ")
		}
		fmt.Fprintf(&q, "%s = $%d::text::%s", quoteIdent(c), i+1, typ)
		args[i] = pk[i]
	}
	vals := make([]any, len(sh.Columns))
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	switch err := a.db.QueryRowContext(ctx, q.String(), args...).Scan(ptrs...); err {
	case nil:
		return vals, true, nil
	case sql.ErrNoRows:
		return nil, false, nil
	default:
		return nil, false, err
	}
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
