package gormcache

import (
	"context"
	"log/slog"

	"gorm.io/gorm"
)

// write wraps GORM's gorm:create, gorm:update and gorm:delete for registered models:
// the statement is sent with RETURNING of the primary key (see pool), so Postgres
// names the rows it wrote, and their invalidation is queued on the transaction, or
// done at once when the statement committed by itself.
func (p *Plugin) write(db *gorm.DB, next func(*gorm.DB)) {
	stmt := db.Statement
	m := p.model(stmt.Schema)
	if m == nil || p.bypassed(stmt) || db.Error != nil || db.DryRun {
		next(db)
		return
	}
	// The keys the model value holds before the write: an update of the key itself
	// (Model(&u).Update("id", 9)) changes the row's key, and RETURNING names the new
	// one only.
	before, _ := m.rowIDs(stmt.Context, stmt.ReflectValue, true)
	ctx := stmt.Context
	c := &collector{m: m}
	if table, own := ownTable(stmt); own {
		// RETURNING names the key columns by the table (an UPDATE … FROM joins others,
		// which may have columns of the same names); a table given by db.Table, maybe
		// with an alias, would need that alias, so its writes go without.
		c.table = table
		stmt.Context = context.WithValue(ctx, collectorKey{}, c)
	}
	next(db)
	stmt.Context = ctx
	if db.Error != nil {
		return // GORM rolls its own transaction back; the caller's is theirs to end
	}
	ids := append(c.ids, before...)
	if !c.ran {
		// Not sent through the plugin's pool (a prepared statement, or RETURNING the
		// caller asked for, which GORM scans into the model), or nothing to write.
		after, ok := m.rowIDs(ctx, stmt.ReflectValue, true)
		ids = append(before, after...)
		if !ok || db.RowsAffected > int64(len(ids)) {
			p.stats.unknown.Add(1)
			p.warn("gormcache: a write's rows are not known; the invalidator will invalidate them",
				slog.String("model", m.sch.Name), slog.String("sql", stmt.SQL.String()))
		}
	}
	if len(ids) > 0 {
		p.written(ctx, stmt.ConnPool, m, ids, c.ran && c.deleted)
	}
}

// written invalidates the rows after the commit: queued on the plugin's transaction,
// at once when the write was not in a transaction (it committed when it returned).
// deleted says that the rows were deleted (a DELETE, not a soft delete).
func (p *Plugin) written(ctx context.Context, conn gorm.ConnPool, m *model, ids []any, deleted bool) {
	if tx := trackedTx(conn); tx != nil {
		tx.queue(p, m, ids, deleted)
		return
	}
	if _, inTx := conn.(gorm.TxCommitter); inTx {
		// A transaction begun elsewhere (before db.Use, on another pool): its commit is
		// not seen, and invalidating now would let a reader cache the old row again
		// before it commits.
		p.stats.unknown.Add(1)
		p.warn("gormcache: a write inside a transaction the plugin does not track; the invalidator will invalidate its rows",
			slog.String("model", m.sch.Name))
		return
	}
	p.invalidate(context.WithoutCancel(ctx), m, m.distinct(ids), deleted)
}

// invalidate deletes the rows' entries, and fills them again for write-through models.
// For a model with lookups it then reads the rows back and deletes the lookup entries
// their values name, unless deleted says the rows were all deleted: a deleted row left
// every entry, which needs nothing (lookups check the rows they return), and reading
// it back would cost a query to learn that it is gone. It runs after the commit, so a
// failure is counted and logged, not returned.
func (p *Plugin) invalidate(ctx context.Context, m *model, ids []any, deleted bool) {
	if err := m.invalidate(ctx, ids); err != nil {
		p.stats.errors.Add(1)
		p.warn("gormcache: write committed, but its cache entries could not be deleted; the invalidator and the entries' TTL will remove them",
			slog.String("model", m.sch.Name), slog.Any("error", err))
		return
	}
	p.stats.invalidated.Add(uint64(len(ids)))
	if !m.refill && (len(m.lookups) == 0 || deleted) {
		return
	}
	// A read after the invalidation fills under a lease taken after it: the last
	// commit's row or nothing, as a repository's write-through; and the rows' values
	// as they are now name the lookup entries the write may have made stale.
	rows, err := m.getMany(ctx, ids)
	if err != nil {
		p.warn("gormcache: write committed, but reading its rows back failed; the next read loads them, and the invalidator deletes the lookup entries they name",
			slog.String("model", m.sch.Name), slog.Any("error", err))
		return
	}
	if err := m.invalidateLookups(ctx, rows); err != nil {
		p.stats.errors.Add(1)
		p.warn("gormcache: write committed, but the lookup entries its rows name could not be deleted; the invalidator and the entries' TTL will remove them",
			slog.String("model", m.sch.Name), slog.Any("error", err))
	}
}

// distinct returns ids without repeats (by key).
func (m *model) distinct(ids []any) []any {
	if len(ids) < 2 {
		return ids
	}
	seen := make(map[string]bool, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		k, err := m.key(id)
		if err != nil || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, id)
	}
	return out
}
