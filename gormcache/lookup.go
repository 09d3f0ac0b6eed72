package gormcache

import (
	"reflect"
	"regexp"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// A query is served only when it is provably a lookup by primary key whose answer the
// repository gives exactly as GORM would. Everything here errs towards Postgres: a form
// not recognised, a clause not understood, a value whose type Postgres might read
// otherwise than the key's canonical form does, and the query goes through untouched.

// lookup is a query the plugin serves: the ids of the rows, without repeats, or the
// value of a unique column (column, then, names it).
type lookup struct {
	ids    []any
	column string
	value  any
}

// lookupOf returns the lookup db's query is, or false when it must go to Postgres.
func (m *model) lookupOf(db *gorm.DB) (lookup, bool) {
	stmt := db.Statement
	if !plain(db) {
		return lookup{}, false
	}
	if !stmt.ReflectValue.CanSet() {
		return lookup{}, false // a destination passed by value: GORM says what it thinks of it
	}
	single := stmt.ReflectValue.Kind() == reflect.Struct
	if single && stmt.ReflectValue.Type() != m.typ || !single && !m.sliceOfModel(stmt.ReflectValue.Type()) {
		return lookup{}, false
	}
	c := constraints{pk: make([][]any, len(m.pk))}
	if where, ok := stmt.Clauses["WHERE"]; ok {
		w, ok := where.Expression.(clause.Where)
		if !ok || !m.constrain(stmt, w.Exprs, &c) {
			return lookup{}, false
		}
	}
	if single {
		// GORM adds the destination's key to the conditions when it is set.
		for i, f := range m.pk {
			if v, zero := f.ValueOf(stmt.Context, stmt.ReflectValue); !zero && !m.add(c.pk, i, []any{v}) {
				return lookup{}, false
			}
		}
	}
	var l lookup
	n, ok := 1, false // rows the lookup can find
	if c.column != "" {
		// By a unique column: into a struct only (answerRow).
		l, ok = m.byColumn(c)
		ok = ok && single
	} else if l, ok = m.ids(c.pk); ok {
		n = len(l.ids)
	}
	// One row for a struct and for First, Take and Last (several keys would need the
	// ordering Postgres applies); any number for Find into a slice, unless limited.
	if !ok || n == 0 || (single || stmt.RaiseErrorOnNotFound) && n != 1 {
		return lookup{}, false
	}
	if !limitHolds(stmt, n) || !m.orderHolds(stmt, n) {
		return lookup{}, false
	}
	return l, true
}

// constraints are the values a query's conditions allow: for each key column, and for
// one other column (column, values) when it is one with a lookup of its own.
type constraints struct {
	pk     [][]any
	column string
	values []any
}

// byColumn returns the lookup by a unique column that c is: the column alone, to one
// value.
func (m *model) byColumn(c constraints) (lookup, bool) {
	for _, vals := range c.pk {
		if vals != nil {
			return lookup{}, false
		}
	}
	if len(c.values) != 1 {
		return lookup{}, false
	}
	return lookup{column: c.column, value: c.values[0]}, true
}

// plain reports whether the statement is a plain SELECT * of its model from its table,
// outside a transaction, with no clause but WHERE, LIMIT and ORDER BY.
func plain(db *gorm.DB) bool {
	stmt := db.Statement
	switch {
	case db.DryRun, stmt.SQL.Len() > 0, stmt.Unscoped, stmt.Distinct,
		len(stmt.Selects) > 0, len(stmt.Omits) > 0, len(stmt.Joins) > 0, len(stmt.Preloads) > 0,
		!samePointer(stmt.Model, stmt.Dest):
		return false
	}
	if _, own := ownTable(stmt); !own {
		return false
	}
	if _, inTx := stmt.ConnPool.(gorm.TxCommitter); inTx {
		return false
	}
	for name := range stmt.Clauses {
		switch name {
		case "WHERE", "LIMIT", "ORDER BY":
		default:
			return false
		}
	}
	return true
}

// ownTable returns the statement's table, quoted as its SQL names it, and whether it
// is the model's own table: the one GORM sets when it parses the model (a
// schema-qualified name becomes a table expression, see gorm.Statement.Parse), not
// one from db.Table.
func ownTable(stmt *gorm.Statement) (string, bool) {
	table := stmt.Schema.Table
	if stmt.TableExpr == nil {
		return stmt.Quote(table), stmt.Table == table
	}
	quoted := stmt.Quote(table)
	s, t, qualified := strings.Cut(table, ".")
	return quoted, qualified && s != "" && stmt.Table == t && stmt.TableExpr.SQL == quoted && len(stmt.TableExpr.Vars) == 0
}

// samePointer reports whether a and b are the same pointer: the query's model is its
// destination (db.Model(&x).Find(&y) selects y's fields from x's table).
func samePointer(a, b any) bool {
	ra, rb := reflect.ValueOf(a), reflect.ValueOf(b)
	return ra.Kind() == reflect.Pointer && rb.Kind() == reflect.Pointer && ra.Pointer() == rb.Pointer() && ra.Type() == rb.Type()
}

func (m *model) sliceOfModel(t reflect.Type) bool {
	if t.Kind() != reflect.Slice {
		return false
	}
	e := t.Elem()
	return e == m.typ || e.Kind() == reflect.Pointer && e.Elem() == m.typ
}

// constrain adds the values each condition allows to the column it names (a key
// column, or one with a lookup of its own); false when a condition is anything else.
func (m *model) constrain(stmt *gorm.Statement, exprs []clause.Expression, c *constraints) bool {
	for _, e := range exprs {
		var (
			name string
			vals []any
			ok   bool
		)
		switch x := e.(type) {
		case clause.AndConditions:
			if !m.constrain(stmt, x.Exprs, c) {
				return false
			}
			continue
		case clause.IN:
			name, ok = m.columnName(stmt, x.Column)
			vals = x.Values
		case clause.Eq:
			name, ok = m.columnName(stmt, x.Column)
			vals, ok = eqValues(x.Value, ok)
		case clause.Expr:
			name, vals, ok = m.expr(stmt, x)
		}
		if !ok || !m.constrainColumn(c, name, vals) {
			return false
		}
	}
	return true
}

// constrainColumn records that column name is constrained to vals.
func (m *model) constrainColumn(c *constraints, name string, vals []any) bool {
	for i, f := range m.pk {
		if f.DBName == name {
			return m.add(c.pk, i, vals)
		}
	}
	f, ok := m.unique[name]
	if !ok || c.column != "" || len(vals) == 0 {
		return false
	}
	for _, v := range vals {
		if !takes(f.field, v) {
			return false
		}
	}
	c.column, c.values = name, vals
	return true
}

// eqValues returns the values clause.Eq compares with: a list for the slices it builds
// as IN (see clause.Eq.Build).
func eqValues(v any, ok bool) ([]any, bool) {
	switch v.(type) {
	case []string, []int, []int32, []int64, []uint, []uint32, []uint64, []any:
		rv := reflect.ValueOf(v)
		vals := make([]any, rv.Len())
		for i := range vals {
			vals[i] = rv.Index(i).Interface()
		}
		return vals, ok
	}
	return []any{v}, ok
}

// add records that key column col is constrained to vals. A column constrained twice,
// an empty list and values of a type the column's field does not take are refused.
func (m *model) add(cols [][]any, col int, vals []any) bool {
	if cols[col] != nil || len(vals) == 0 {
		return false
	}
	for _, v := range vals {
		if !takes(m.pk[col], v) {
			return false
		}
	}
	cols[col] = vals
	return true
}

// takes reports whether v is a value of the field's own type, or of a built-in
// integer type for an integer field. Other values may be read by Postgres otherwise
// than their canonical key is spelled (the text "05" for an integer key), or fail there.
func takes(f *schema.Field, v any) bool {
	ft := f.FieldType
	for ft.Kind() == reflect.Pointer {
		ft = ft.Elem()
	}
	vt := reflect.TypeOf(v)
	switch {
	case vt == nil:
		return false
	case vt == ft:
		return true
	case isInt(ft.Kind()) && isInt(vt.Kind()) && vt.PkgPath() == "":
		return true
	}
	return false
}

func isInt(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// columnName returns the column that c names as GORM quotes it: a clause.Column of
// the current table, or a string ("id", "users.id").
func (m *model) columnName(stmt *gorm.Statement, c any) (string, bool) {
	var table, name string
	switch c := c.(type) {
	case clause.Column:
		if c.Raw || c.Alias != "" {
			return "", false
		}
		table, name = c.Table, c.Name
		if table == clause.CurrentTable {
			table = ""
		}
		if name == clause.PrimaryKey {
			// The model's prioritised key: the key itself when it has one column.
			if len(m.pk) != 1 {
				return "", false
			}
			name = m.pk[0].DBName
		}
	case string:
		name = c
		if t, n, ok := strings.Cut(c, "."); ok {
			table, name = t, n
		}
	default:
		return "", false
	}
	return name, table == "" || table == stmt.Table
}

// column returns the index of the key column that c names.
func (m *model) column(stmt *gorm.Statement, c any) (int, bool) {
	name, ok := m.columnName(stmt, c)
	for i, f := range m.pk {
		if ok && f.DBName == name {
			return i, true
		}
	}
	return 0, false
}

// condition matches the SQL conditions served: `column = ?` and `column IN ?`, the
// column optionally qualified by the table, either quoted or not.
var condition = regexp.MustCompile(`^\s*(?:([A-Za-z_][A-Za-z0-9_]*|"[^"]+")\s*\.\s*)?([A-Za-z_][A-Za-z0-9_]*|"[^"]+")\s*(=|[Ii][Nn])\s*\?\s*$`)

// expr returns the column and the values of a condition written in SQL.
func (m *model) expr(stmt *gorm.Statement, e clause.Expr) (string, []any, bool) {
	sub := condition.FindStringSubmatch(e.SQL)
	if sub == nil || len(e.Vars) != 1 || e.WithoutParentheses {
		return "", nil, false
	}
	table, name := ident(sub[1]), ident(sub[2])
	if table != "" && table != stmt.Table {
		return "", nil, false
	}
	v := e.Vars[0]
	rv := reflect.ValueOf(v)
	isList := rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() != reflect.Uint8
	if sub[3] == "=" {
		// A list after = is spelled (a, b) by GORM: not a lookup.
		return name, []any{v}, !isList
	}
	if !isList {
		return "", nil, false
	}
	vals := make([]any, rv.Len())
	for i := range vals {
		vals[i] = rv.Index(i).Interface()
	}
	return name, vals, true
}

// ident returns an identifier as Postgres reads it: unquoted ones folded to lower case.
func ident(s string) string {
	if len(s) >= 2 && s[0] == '"' {
		return s[1 : len(s)-1]
	}
	return strings.ToLower(s)
}

// ids returns the ids the constrained columns name: every key column must be
// constrained; a composite key to one value per column.
func (m *model) ids(cols [][]any) (lookup, bool) {
	for _, vals := range cols {
		if vals == nil || len(cols) > 1 && len(vals) != 1 {
			return lookup{}, false
		}
	}
	if len(cols) > 1 {
		id := make([]any, len(cols))
		for i, vals := range cols {
			id[i] = vals[0]
		}
		if _, err := m.key(id); err != nil {
			return lookup{}, false
		}
		return lookup{ids: []any{id}}, true
	}
	seen := make(map[string]bool, len(cols[0]))
	l := lookup{ids: make([]any, 0, len(cols[0]))}
	for _, v := range cols[0] {
		k, err := m.key(v)
		if err != nil {
			return lookup{}, false
		}
		if !seen[k] {
			seen[k] = true
			l.ids = append(l.ids, v)
		}
	}
	return l, true
}

// limitHolds reports whether the LIMIT clause, if any, cuts nothing from n rows.
func limitHolds(stmt *gorm.Statement, n int) bool {
	c, ok := stmt.Clauses["LIMIT"]
	if !ok {
		return true
	}
	l, ok := c.Expression.(clause.Limit)
	if !ok || l.Offset != 0 {
		return false
	}
	return l.Limit == nil || *l.Limit < 0 || *l.Limit >= n // a negative limit is none
}

// orderHolds reports whether the ORDER BY clause, if any, orders nothing: First's and
// Last's order by the key, over one row.
func (m *model) orderHolds(stmt *gorm.Statement, n int) bool {
	c, ok := stmt.Clauses["ORDER BY"]
	if !ok {
		return true
	}
	o, ok := c.Expression.(clause.OrderBy)
	if !ok || o.Expression != nil || n != 1 {
		return false
	}
	for _, col := range o.Columns {
		if col.Column.Name == clause.PrimaryKey && !col.Column.Raw && (col.Column.Table == clause.CurrentTable || col.Column.Table == "") {
			continue
		}
		if _, ok := m.column(stmt, col.Column); !ok {
			return false
		}
	}
	return true
}
