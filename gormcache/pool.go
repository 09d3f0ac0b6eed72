package gormcache

import (
	"context"
	"database/sql"
	"errors"
	"reflect"
	"strings"
	"sync"

	"gorm.io/gorm"
)

// pool wraps the *gorm.DB's connection pool so that the plugin sees transactions
// commit: GORM begins every transaction (its own around a write, db.Transaction,
// db.Begin) through the pool's BeginTx, and commits through what that returned.
type pool struct {
	gorm.ConnPool
}

var (
	_ gorm.ConnPoolBeginner = (*pool)(nil)
	_ gorm.GetDBConnector   = (*pool)(nil)
	_ gorm.Tx               = (*tx)(nil)
)

// BeginTx begins a transaction on the wrapped pool and returns it tracked.
func (c *pool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	var inner gorm.ConnPool
	var err error
	switch b := c.ConnPool.(type) {
	case gorm.TxBeginner:
		var t *sql.Tx
		if t, err = b.BeginTx(ctx, opts); err == nil {
			inner = t
		}
	case gorm.ConnPoolBeginner:
		inner, err = b.BeginTx(ctx, opts)
	default:
		return nil, gorm.ErrInvalidTransaction
	}
	if err != nil {
		return nil, err
	}
	t, ok := inner.(gorm.Tx)
	if !ok {
		return nil, gorm.ErrInvalidTransaction
	}
	return &tx{Tx: t, pool: c, ctx: context.WithoutCancel(ctx)}, nil
}

// ExecContext sends a write of a registered model with RETURNING (see collector).
func (c *pool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if col, ok := ctx.Value(collectorKey{}).(*collector); ok {
		return col.exec(ctx, c.ConnPool, query, args)
	}
	return c.ConnPool.ExecContext(ctx, query, args...)
}

// GetDBConn returns the *sql.DB underneath, for gorm.DB.DB.
func (c *pool) GetDBConn() (*sql.DB, error) {
	switch p := c.ConnPool.(type) {
	case *sql.DB:
		return p, nil
	case gorm.GetDBConnector:
		return p.GetDBConn()
	}
	return nil, gorm.ErrInvalidDB
}

// Ping pings the pool underneath, when it can.
func (c *pool) Ping() error {
	if p, ok := c.ConnPool.(interface{ Ping() error }); ok {
		return p.Ping()
	}
	return nil
}

// tx is a transaction begun on the plugin's pool: it holds the invalidations of the
// writes made in it until it commits, and drops them when it rolls back. Savepoints
// rolled back inside it keep theirs: invalidating a row that did not change costs a
// miss, never a stale read.
type tx struct {
	gorm.Tx
	pool *pool
	ctx  context.Context // the context the transaction began with, uncancelled

	mu      sync.Mutex
	pending map[*model][]any
	seen    map[string]bool
	// readBack holds the models whose written rows are read back after the commit
	// (see Plugin.invalidate): those written by other statements than DELETEs.
	readBack map[*model]bool
	plugin   *Plugin
}

// trackedTx returns the plugin's transaction conn is (directly or under GORM's
// prepared-statement wrapper), or nil.
func trackedTx(conn gorm.ConnPool) *tx {
	switch c := conn.(type) {
	case *tx:
		return c
	case *gorm.PreparedStmtTX:
		t, _ := c.Tx.(*tx)
		return t
	}
	return nil
}

// queue records the rows to invalidate at the commit, once each; deleted says that
// the statement that wrote them was a DELETE.
func (t *tx) queue(p *Plugin, m *model, ids []any, deleted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending == nil {
		t.pending, t.seen, t.readBack, t.plugin = make(map[*model][]any), make(map[string]bool), make(map[*model]bool), p
	}
	if !deleted {
		t.readBack[m] = true
	}
	for _, id := range ids {
		k, err := m.key(id)
		if err != nil || t.seen[k] {
			continue
		}
		t.seen[k] = true
		t.pending[m] = append(t.pending[m], id)
	}
}

// take returns the queued invalidations and forgets them.
func (t *tx) take() (*Plugin, map[*model][]any, map[*model]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, pending, readBack := t.plugin, t.pending, t.readBack
	t.pending, t.seen, t.readBack = nil, nil, nil
	return p, pending, readBack
}

// Commit commits and then invalidates the rows written. A failed commit invalidates
// them too: it may have committed (the connection broke after COMMIT was sent), and an
// invalidation of rows that did not change costs only a miss.
func (t *tx) Commit() error {
	err := t.Tx.Commit()
	if p, pending, readBack := t.take(); p != nil {
		for m, ids := range pending {
			p.invalidate(t.ctx, m, ids, !readBack[m])
		}
	}
	return err
}

// Rollback rolls back and drops the invalidations.
func (t *tx) Rollback() error {
	_, _, _ = t.take()
	return t.Tx.Rollback()
}

// ExecContext sends a write of a registered model with RETURNING (see collector).
func (t *tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if col, ok := ctx.Value(collectorKey{}).(*collector); ok {
		return col.exec(ctx, t.Tx, query, args)
	}
	return t.Tx.ExecContext(ctx, query, args...)
}

// GetDBConn returns the *sql.DB the transaction runs on, for gorm.DB.DB.
func (t *tx) GetDBConn() (*sql.DB, error) { return t.pool.GetDBConn() }

// collectorKey carries a *collector in the context of one write statement.
type collectorKey struct{}

// collector learns the keys of the rows one INSERT, UPDATE or DELETE of a registered
// model wrote, from Postgres: it sends the statement with RETURNING of the primary key
// and reads the keys back, in place of GORM's Exec. It serves one statement: the one
// GORM's gorm:create, gorm:update or gorm:delete sends while it is in the context.
type collector struct {
	m     *model
	table string // the statement's table, quoted
	ran   bool
	ids   []any
	// deleted: the statement that ran was a DELETE, so its rows left every lookup
	// entry their values named (see Plugin.invalidate).
	deleted bool
}

// exec runs the write with RETURNING and returns what Exec would have: the number of
// rows written.
func (c *collector) exec(ctx context.Context, conn gorm.ConnPool, query string, args []any) (sql.Result, error) {
	verb := returnable(query)
	if c.ran || verb == "" {
		return conn.ExecContext(ctx, query, args...)
	}
	c.ran, c.deleted = true, verb == "DELETE"
	cols := make([]string, len(c.m.pk))
	for i, f := range c.m.pk {
		cols[i] = c.table + `."` + strings.ReplaceAll(f.DBName, `"`, `""`) + `"`
	}
	rows, err := conn.QueryContext(ctx, query+" RETURNING "+strings.Join(cols, ", "), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var n int64
	for rows.Next() {
		id, err := c.scan(rows)
		if err != nil {
			return nil, err
		}
		c.ids = append(c.ids, id)
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return written(n), nil
}

// scan reads one row's key into values of the key fields' types, as GORM would.
func (c *collector) scan(rows *sql.Rows) (any, error) {
	ptrs := make([]any, len(c.m.pk))
	for i, f := range c.m.pk {
		ptrs[i] = reflect.New(f.FieldType).Interface()
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	vals := make([]any, len(ptrs))
	for i, ptr := range ptrs {
		vals[i] = reflect.ValueOf(ptr).Elem().Interface()
	}
	if len(vals) == 1 {
		return vals[0], nil
	}
	return vals, nil
}

// returnable returns the verb of query (INSERT, UPDATE or DELETE) when RETURNING can
// be appended to it: a single such statement without one; else "".
func returnable(query string) string {
	q := strings.ToUpper(strings.TrimSpace(query))
	if strings.Contains(q, "RETURNING") || strings.Contains(q, ";") {
		return ""
	}
	for _, verb := range []string{"INSERT", "UPDATE", "DELETE"} {
		if strings.HasPrefix(q, verb+" ") {
			return verb
		}
	}
	return ""
}

// written is the sql.Result of a write sent with RETURNING.
type written int64

func (n written) RowsAffected() (int64, error) { return int64(n), nil }

func (written) LastInsertId() (int64, error) {
	return 0, errors.New("gormcache: LastInsertId is not supported by Postgres")
}
