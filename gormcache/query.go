package gormcache

import (
	"context"
	"log/slog"
	"reflect"

	"gorm.io/gorm"
)

// query replaces gorm:query: it answers lookups of registered models through their
// repository and hands every other query to GORM's own callback.
func (p *Plugin) query(db *gorm.DB) {
	if db.Error != nil || !p.serve(db) {
		p.next.query(db)
	}
}

// serve answers db's query from the cache if it is a lookup by key of a registered
// model, and reports whether it did.
func (p *Plugin) serve(db *gorm.DB) bool {
	stmt := db.Statement
	m := p.model(stmt.Schema)
	if m == nil || p.bypassed(stmt) {
		return false
	}
	if resolving(db) {
		// Installed after the plugin: its reads would fill the cache from replicas.
		p.stats.passed.Add(1)
		p.warn("gormcache: GORM's dbresolver is registered, so queries go to Postgres uncached", slog.String("model", m.sch.Name))
		return false
	}
	l, ok := m.lookupOf(db)
	if !ok {
		p.stats.passed.Add(1)
		return false
	}
	p.stats.served.Add(1)
	var n int
	var err error
	switch {
	case l.column != "":
		n, err = m.answerRow(db, func(ctx context.Context) (reflect.Value, bool, error) {
			return m.unique[l.column].get(ctx, l.value)
		})
	case stmt.ReflectValue.Kind() == reflect.Struct:
		n, err = m.answerRow(db, func(ctx context.Context) (reflect.Value, bool, error) { return m.get(ctx, l.ids[0]) })
	default:
		n, err = m.answerRows(db, l.ids)
	}
	if err != nil {
		db.AddError(err)
		return true
	}
	db.RowsAffected = int64(n)
	if stmt.Result != nil {
		stmt.Result.RowsAffected = db.RowsAffected
	}
	if n == 0 && stmt.RaiseErrorOnNotFound {
		db.AddError(gorm.ErrRecordNotFound)
	}
	return true
}

// answerRow sets the destination struct's column fields from the row get returns, as
// GORM's scan sets them (other fields keep their values), and returns how many rows
// it found. With no row the destination is left as it was.
func (m *model) answerRow(db *gorm.DB, get func(context.Context) (reflect.Value, bool, error)) (int, error) {
	ctx := db.Statement.Context
	row, ok, err := get(ctx)
	if err != nil || !ok {
		return 0, err
	}
	dest := db.Statement.ReflectValue
	for _, f := range m.fields {
		f.ReflectValueOf(ctx, dest).Set(f.ReflectValueOf(ctx, row))
	}
	return 1, nil
}

// answerRows sets the destination slice to the rows with these ids, as GORM's scan
// does: a new slice, empty but not nil when no row exists.
func (m *model) answerRows(db *gorm.DB, ids []any) (int, error) {
	rows, err := m.getMany(db.Statement.Context, ids)
	if err != nil {
		return 0, err
	}
	dest := db.Statement.ReflectValue
	out := reflect.MakeSlice(dest.Type(), 0, rows.Len())
	pointers := dest.Type().Elem().Kind() == reflect.Pointer
	for i := range rows.Len() {
		row := rows.Index(i)
		if pointers {
			row = row.Addr()
		}
		out = reflect.Append(out, row)
	}
	dest.Set(out)
	return rows.Len(), nil
}
