package gormcache_test

import (
	"errors"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/plugin/dbresolver"

	"github.com/pgcache/pgcache/gormcache"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// TestResolverRefused: with GORM's dbresolver, reads may go to a replica, whose rows
// may be older than the invalidations already made; the plugin refuses to be installed
// after it, and stops serving once it is installed after the plugin: reads then go
// where dbresolver sends them, untouched, and nothing is filled.
func TestResolverRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed(t)
	replica := newEnv(t) // a "replica" that lags: user 1 still has its old name
	replica.seed(t)
	replica.exec(t, `UPDATE users SET name = 'lagging' WHERE id = 1`)

	t.Run("installed after dbresolver", func(t *testing.T) {
		db := e.open(t)
		if err := db.Use(dbresolver.Register(dbresolver.Config{Replicas: []gorm.Dialector{postgres.Open(replica.dbURL)}})); err != nil {
			t.Fatal(err)
		}
		p, err := gormcache.New(db, e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Use(p); !errors.Is(err, gormcache.ErrResolver) {
			t.Fatalf("Use after dbresolver = %v, want ErrResolver", err)
		}
	})
	t.Run("dbresolver installed after", func(t *testing.T) {
		pr := e.proc(t, writepolicy.Invalidate)
		if err := pr.db.Use(dbresolver.Register(dbresolver.Config{Replicas: []gorm.Dialector{postgres.Open(replica.dbURL)}})); err != nil {
			t.Fatal(err)
		}
		if got := name(t, pr.db, 1); got != "lagging" {
			t.Fatalf("read %q, want the replica's row, as dbresolver sends the query there", got)
		}
		if s := pr.users.Stats(); s.Misses+s.Hits+s.Fills != 0 || pr.plugin.Stats().Served != 0 {
			t.Fatalf("repository stats %+v, plugin %+v: the cache was used with dbresolver installed", s, pr.plugin.Stats())
		}
	})
}
