// Package widgettest is the widgets table that the invalidator's and the worker's tests
// share: the Widget model, and a table of rows in a database of the test's own, cached
// under a Redis prefix of the test's own, with the helpers those tests change rows and
// check the cache with. Only tests import it.
package widgettest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/readthrough"
)

// Widget is a row of the widgets table.
type Widget struct {
	ID   int64 `gorm:"primaryKey"`
	Name string
}

// Table is a widgets table in a database of the test's own, and a readthrough
// repository of it under a Redis prefix of the test's own.
type Table struct {
	PG     *integration.Database
	DB     *gorm.DB // connected as the database's non-superuser REPLICATION role
	Redis  *redis.Client
	Prefix string
	Repo   *readthrough.Repository[Widget]
}

// New creates the widgets table in pg with rows 1..rows named "v0", and a repository
// of it caching under a new prefix of rd. The connections close when the test ends.
func New(t testing.TB, pg *integration.Database, rd *integration.Redis, rows int) *Table {
	t.Helper()
	tbl := &Table{PG: pg, Redis: rd.Client(t), Prefix: rd.Prefix(t)}
	db, err := gorm.Open(postgres.Open(pg.RoleURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	tbl.DB = db
	if err := db.AutoMigrate(&Widget{}); err != nil {
		t.Fatal(err)
	}
	if rows > 0 {
		tbl.Exec(t, `INSERT INTO widgets (id, name) SELECT g, 'v0' FROM generate_series(1, ?) g`, rows)
	}
	// A generous Redis timeout: on a loaded machine the default (100ms) makes some
	// fills give up, and the tests count on reads filling the cache.
	cache, err := readthrough.New(db, tbl.Redis, readthrough.Options{Prefix: tbl.Prefix, RedisTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if tbl.Repo, err = readthrough.Register[Widget](cache, readthrough.ModelOptions{}); err != nil {
		t.Fatal(err)
	}
	return tbl
}

// Exec runs a statement, with GORM's ? placeholders, and fails the test if it fails.
func (tbl *Table) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if err := tbl.DB.Exec(sql, args...).Error; err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// Cached reports whether row id has an entry in Redis, cached as absent included.
func (tbl *Table) Cached(t testing.TB, id int64) bool {
	t.Helper()
	key, err := tbl.Repo.Key(id)
	if err != nil {
		t.Fatal(err)
	}
	n, err := tbl.Redis.Exists(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// Fill reads the rows through the cache until they are cached: a read may leave its row
// uncached, its fill given up on a slow Redis or fenced off by a concurrent invalidation.
func (tbl *Table) Fill(t testing.TB, ids ...int64) {
	t.Helper()
	for _, id := range ids {
		integration.Eventually(t, fmt.Sprintf("row %d to be cached by a read", id), func() bool {
			if _, _, err := tbl.Repo.Get(context.Background(), id); err != nil {
				t.Fatal(err)
			}
			return tbl.Cached(t, id)
		})
	}
}

// Barrier commits a change to row id, cached first, and waits until its key is deleted.
// Transactions are invalidated in commit order, so every transaction that committed
// before the barrier's has been handled when it returns.
func (tbl *Table) Barrier(t testing.TB, id int64) {
	t.Helper()
	tbl.Fill(t, id)
	tbl.Exec(t, `UPDATE widgets SET name = 'barrier' WHERE id = ?`, id)
	integration.Eventually(t, fmt.Sprintf("the barrier row %d to be invalidated", id), func() bool { return !tbl.Cached(t, id) })
}

// Stale returns the rows among 1..n whose cached entry differs from the database, and
// how many of them are cached. Rows are never deleted in the tests that call it (a
// cached row missing from the database fails the test), and nothing may write to the
// table or the cache meanwhile.
func (tbl *Table) Stale(t testing.TB, n int) (stale []string, cached int) {
	t.Helper()
	ctx := context.Background()
	exists := make([]*redis.IntCmd, n)
	_, err := tbl.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range exists {
			key, err := tbl.Repo.Key(int64(i + 1))
			if err != nil {
				return err
			}
			exists[i] = p.Exists(ctx, key)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var ids []any
	for i, c := range exists {
		if c.Val() == 1 {
			ids = append(ids, int64(i+1))
		}
	}
	if len(ids) == 0 {
		return nil, 0
	}
	// Every row exists, and the ones asked for are cached: GetMany reads them from
	// Redis alone, and leaves out those cached as absent.
	got, err := tbl.Repo.GetMany(ctx, ids...)
	if err != nil {
		t.Fatal(err)
	}
	cachedName := make(map[int64]string, len(got))
	for _, w := range got {
		cachedName[w.ID] = w.Name
	}
	var inDB []Widget
	if err := tbl.DB.Raw(`SELECT id, name FROM widgets WHERE id IN ?`, ids).Scan(&inDB).Error; err != nil {
		t.Fatal(err)
	}
	if len(inDB) != len(ids) {
		t.Fatalf("%d of %d cached rows found in the database; rows are never deleted here", len(inDB), len(ids))
	}
	for _, w := range inDB {
		switch name, ok := cachedName[w.ID]; {
		case !ok:
			stale = append(stale, fmt.Sprintf("row %d: cached as absent, database %q", w.ID, w.Name))
		case name != w.Name:
			stale = append(stale, fmt.Sprintf("row %d: cached %q, database %q", w.ID, name, w.Name))
		}
	}
	return stale, len(ids)
}
