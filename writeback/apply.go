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
	first := changes[0]
	var b strings.Builder
	var args []any
	n := 0
	param := func() string {
		n++
		return "$" + strconv.Itoa(n)
	}
	if first.SoftDelete != "" {
		// As GORM's Delete of a model with gorm.DeletedAt: a row deleted already keeps
		// its time. One row per statement (see applyChanges).
		col := quoteIdent(first.SoftDelete)
		fmt.Fprintf(&b, "UPDATE %s SET %s = $1 WHERE %s IS NULL", first.qualifiedTable(), col, col)
		args = append(args, first.Values[slices.Index(first.Columns, first.SoftDelete)])
		n = 1
		for _, k := range first.Key {
			fmt.Fprintf(&b, " AND %s = %s", quoteIdent(k), param())
			args = append(args, first.Values[slices.Index(first.Columns, k)])
		}
		return b.String(), args
	}
	if first.Delete {
		fmt.Fprintf(&b, "DELETE FROM %s WHERE ", first.qualifiedTable())
		cols := make([]string, len(first.Key))
		for i, k := range first.Key {
			cols[i] = quoteIdent(k)
		}
		if len(cols) == 1 {
			b.WriteString(cols[0])
		} else {
			b.WriteString("(" + strings.Join(cols, ", ") + ")")
		}
		b.WriteString(" IN (")
		for i, c := range changes {
			if i > 0 {
				b.WriteString(", ")
			}
			if len(cols) > 1 {
				b.WriteString("(")
			}
			for j, k := range first.Key {
				if j > 0 {
					b.WriteString(", ")
				}
				b.WriteString(param())
				args = append(args, c.Values[slices.Index(c.Columns, k)])
			}
			if len(cols) > 1 {
				b.WriteString(")")
			}
		}
		b.WriteString(")")
		return b.String(), args
	}

	cols := make([]string, len(first.Columns))
	for i, col := range first.Columns {
		cols[i] = quoteIdent(col)
	}
	fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES ", first.qualifiedTable(), strings.Join(cols, ", "))
	for i, c := range changes {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(")
		for j, v := range c.Values {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(param())
			args = append(args, v)
		}
		b.WriteString(")")
	}
	keyCols := make([]string, len(first.Key))
	for i, k := range first.Key {
		keyCols[i] = quoteIdent(k)
	}
	fmt.Fprintf(&b, " ON CONFLICT (%s) ", strings.Join(keyCols, ", "))
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
