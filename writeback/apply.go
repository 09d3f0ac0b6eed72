package writeback

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gorm.io/gorm"
)

// maxParams bounds the parameters of one statement (Postgres allows 65535).
const maxParams = 30000

// quoteIdent quotes a Postgres identifier, always: names come from the journal, and a
// plain name may still be a keyword ("user", "order").
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func (c *Change) qualifiedTable() string {
	if c.Schema == "" {
		return quoteIdent(c.Table)
	}
	return quoteIdent(c.Schema) + "." + quoteIdent(c.Table)
}

// shape groups changes that one statement can apply together: same table, same kind,
// same columns.
func (c *Change) shape() string {
	var b strings.Builder
	b.WriteString(c.qualifiedTable())
	if c.SoftDelete != "" {
		b.WriteString(" S ")
	} else if c.Delete {
		b.WriteString(" D ")
	} else {
		b.WriteString(" U ")
	}
	b.WriteString(strings.Join(c.Key, "\x00"))
	b.WriteString("\x01")
	b.WriteString(strings.Join(c.Columns, "\x00"))
	b.WriteString("\x01")
	b.WriteString(strings.Join(c.Update, "\x00"))
	return b.String()
}

// applyChanges runs the statements for changes (one row each, rows distinct) on tx:
// multi-row INSERT ... ON CONFLICT (key) DO UPDATE for upserts, DELETE ... WHERE key
// IN (...) for deletes, grouped by shape and chunked below the parameter limit. Each
// statement locks the rows it writes until the transaction ends, which is what the
// flusher's version check relies on.
func applyChanges(ctx context.Context, tx *gorm.DB, changes []*Change) error {
	// A soft delete journaled over a pending write carries that write, which it
	// superseded in the journal: apply the write first.
	var bases []*Change
	for _, c := range changes {
		if c.Base != nil {
			bases = append(bases, c.Base)
		}
	}
	if len(bases) > 0 {
		if err := applyChanges(ctx, tx, bases); err != nil {
			return err
		}
	}
	groups := make(map[string][]*Change)
	var order []string
	for _, c := range changes {
		s := c.shape()
		if _, ok := groups[s]; !ok {
			order = append(order, s)
		}
		groups[s] = append(groups[s], c)
	}
	pool := tx.Statement.ConnPool
	for _, s := range order {
		g := groups[s]
		per := max(1, maxParams/len(g[0].Columns))
		switch {
		case g[0].SoftDelete != "":
			per = 1 // each row its own time: one UPDATE per row
		case g[0].Delete:
			per = max(1, maxParams/len(g[0].Key))
		}
		for chunk := range slices.Chunk(g, per) {
			sql, args := statement(chunk)
			if _, err := pool.ExecContext(ctx, sql, args...); err != nil {
				return fmt.Errorf("writeback: %s %d rows of %s: %w", verb(chunk[0]), len(chunk), chunk[0].qualifiedTable(), err)
			}
		}
	}
	return nil
}

func verb(c *Change) string {
	switch {
	case c.SoftDelete != "":
		return "soft-delete"
	case c.Delete:
		return "delete"
	}
	return "upsert"
}

// statement returns the SQL and arguments applying changes of one shape.
func statement(changes []*Change) (string, []any) {
	switch first := changes[0]; {
	case first.SoftDelete != "":
		return softDeleteStatement(first)
	case first.Delete:
		return deleteStatement(changes)
	default:
		return upsertStatement(changes)
	}
}

// sqlArgs collects a statement's arguments and names their placeholders, $1 on.
type sqlArgs []any

func (a *sqlArgs) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// value returns c's value of column col.
func (c *Change) value(col string) any { return c.Values[slices.Index(c.Columns, col)] }

// softDeleteStatement sets c's soft-delete column, as GORM's Delete of a model with
// gorm.DeletedAt does: a row deleted already keeps its time. One row per statement
// (see applyChanges).
func softDeleteStatement(c *Change) (string, []any) {
	var b strings.Builder
	var args sqlArgs
	col := quoteIdent(c.SoftDelete)
	fmt.Fprintf(&b, "UPDATE %s SET %s = %s WHERE %s IS NULL", c.qualifiedTable(), col, args.add(c.value(c.SoftDelete)), col)
	for _, k := range c.Key {
		fmt.Fprintf(&b, " AND %s = %s", quoteIdent(k), args.add(c.value(k)))
	}
	return b.String(), args
}

// deleteStatement deletes the rows of changes by key: key IN ($1, …), or for a
// composite key (a, b) IN (($1, $2), …).
func deleteStatement(changes []*Change) (string, []any) {
	first := changes[0]
	var b strings.Builder
	var args sqlArgs
	cols := quoteIdents(first.Key)
	composite := len(cols) > 1
	fmt.Fprintf(&b, "DELETE FROM %s WHERE ", first.qualifiedTable())
	if composite {
		b.WriteString("(" + strings.Join(cols, ", ") + ")")
	} else {
		b.WriteString(cols[0])
	}
	b.WriteString(" IN (")
	for i, c := range changes {
		if i > 0 {
			b.WriteString(", ")
		}
		params := make([]string, len(first.Key))
		for j, k := range first.Key {
			params[j] = args.add(c.value(k))
		}
		if composite {
			b.WriteString("(" + strings.Join(params, ", ") + ")")
		} else {
			b.WriteString(params[0])
		}
	}
	b.WriteString(")")
	return b.String(), args
}

// upsertStatement inserts the rows of changes, updating the columns of Update (or
// nothing) on a conflict of the key.
func upsertStatement(changes []*Change) (string, []any) {
	first := changes[0]
	var b strings.Builder
	var args sqlArgs
	fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES ", first.qualifiedTable(), strings.Join(quoteIdents(first.Columns), ", "))
	for i, c := range changes {
		if i > 0 {
			b.WriteString(", ")
		}
		params := make([]string, len(c.Values))
		for j, v := range c.Values {
			params[j] = args.add(v)
		}
		b.WriteString("(" + strings.Join(params, ", ") + ")")
	}
	fmt.Fprintf(&b, " ON CONFLICT (%s) ", strings.Join(quoteIdents(first.Key), ", "))
	if len(first.Update) == 0 {
		b.WriteString("DO NOTHING")
		return b.String(), args
	}
	b.WriteString("DO UPDATE SET ")
	for i, u := range first.Update {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s = EXCLUDED.%s", quoteIdent(u), quoteIdent(u))
	}
	return b.String(), args
}

// quoteIdents quotes each name as an identifier.
func quoteIdents(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = quoteIdent(n)
	}
	return out
}

// sqlStater is implemented by Postgres errors (pgconn.PgError) without this package
// naming the driver.
type sqlStater interface{ SQLState() string }

// permanent reports whether err is about the row's data (a constraint violation, a
// bad value, an error raised by a trigger): retrying the same write cannot succeed, and
// after MaxRetries the write goes to the dead-letter stream. Other errors are retried
// without limit: connections, timeouts, serialization failures and deadlocks, and also
// missing tables, columns or privileges (class 42), which are deployment problems
// (the application deployed before its migration, a role without grants) that stall
// the flusher, loudly, until they are fixed, rather than dead-letter every write.
func permanent(err error) bool {
	if errors.Is(err, ErrBadChange) {
		return true
	}
	var st sqlStater
	if !errors.As(err, &st) {
		return false
	}
	code := st.SQLState()
	if len(code) < 2 {
		return false
	}
	switch code[:2] {
	case "22", // data exception
		"23",                   // integrity constraint violation
		"2F", "P0", "39", "38": // errors raised by functions and triggers
		return true
	}
	return false
}
