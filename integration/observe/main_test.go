package observe_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/readthrough"
)

var servers integration.Shared

func TestMain(m *testing.M) { os.Exit(servers.Run(m)) }

// Widget and Gadget are the models the tests read and write; Ledger is written back.
type Widget struct {
	ID    int64 `gorm:"primaryKey"`
	Name  string
	Price int
}

type Gadget struct {
	ID   int64 `gorm:"primaryKey"`
	Name string
}

type Ledger struct {
	ID      int64 `gorm:"primaryKey"`
	Balance int
}

// env is one test's database, Redis client and key prefix.
type env struct {
	db     *gorm.DB
	rdb    *redis.Client
	prefix string
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	pgdb := servers.Postgres(tb).NewDatabase(tb)
	rd := servers.Redis(tb)
	db, err := gorm.Open(postgres.Open(pgdb.RoleURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		tb.Fatal(err)
	}
	sqlDB, _ := db.DB()
	tb.Cleanup(func() { sqlDB.Close() })
	if err := db.AutoMigrate(&Widget{}, &Gadget{}, &Ledger{}); err != nil {
		tb.Fatal(err)
	}
	e := &env{db: db, rdb: rd.Client(tb), prefix: rd.Prefix(tb)}
	e.exec(tb, `INSERT INTO widgets (id, name, price) VALUES (1, 'a widget of typical size for a cache benchmark', 42), (3, 'three', 3)`)
	e.exec(tb, `INSERT INTO gadgets (id, name) VALUES (1, 'g')`)
	return e
}

// cache returns a Cache with observer obs (nil: off). The Redis timeout is generous:
// on a loaded machine the default makes reads fall back to Postgres, which these tests
// do not look at.
func (e *env) cache(tb testing.TB, obs readthrough.Observer) *readthrough.Cache {
	tb.Helper()
	c, err := readthrough.New(e.db, e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second, Observer: obs})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func register[T any](tb testing.TB, c *readthrough.Cache, opts readthrough.ModelOptions) *readthrough.Repository[T] {
	tb.Helper()
	r, err := readthrough.Register[T](c, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func (e *env) exec(tb testing.TB, sql string, args ...any) {
	tb.Helper()
	if err := e.db.Exec(sql, args...).Error; err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// get reads id through r and checks whether a row came back.
func get[T any](tb testing.TB, r *readthrough.Repository[T], id int64, want bool) {
	tb.Helper()
	if _, ok, err := r.Get(ctxT(tb), id); err != nil || ok != want {
		tb.Fatalf("Get(%d) = ok %v, err %v; want ok %v", id, ok, err, want)
	}
}
