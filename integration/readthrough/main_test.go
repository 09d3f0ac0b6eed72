package readthrough_test

import (
	"context"
	"os"
	"sync/atomic"
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

// Widget is the model most tests cache.
type Widget struct {
	ID    int64 `gorm:"primaryKey"`
	Name  string
	Price int
}

// env is one test's database, Redis prefix and clients.
type env struct {
	dbURL  string
	db     *gorm.DB
	rdb    redis.UniversalClient
	prefix string
	// queries counts SELECTs on the widgets table made through db.
	queries *atomic.Int64
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	pgdb := servers.Postgres(tb).NewDatabase(tb)
	rd := servers.Redis(tb)
	e := &env{dbURL: pgdb.RoleURL, rdb: rd.Client(tb), prefix: rd.Prefix(tb), queries: new(atomic.Int64)}
	e.db = e.openDB(tb)
	if err := e.db.AutoMigrate(&Widget{}); err != nil {
		tb.Fatal(err)
	}
	return e
}

// openDB opens another connection pool to the test's database, standing in for another
// process, whose widget queries are counted in e.queries too.
func (e *env) openDB(tb testing.TB) *gorm.DB {
	tb.Helper()
	db, err := gorm.Open(postgres.Open(e.dbURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		tb.Fatal(err)
	}
	err = db.Callback().Query().Before("gorm:query").Register("test:count", func(tx *gorm.DB) {
		if tx.Statement.Table == "widgets" {
			e.queries.Add(1)
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	sqlDB, _ := db.DB()
	tb.Cleanup(func() { sqlDB.Close() })
	return db
}

// cache returns a new Cache over db (another "process" when db is another pool).
func (e *env) cache(tb testing.TB, db *gorm.DB) *readthrough.Cache {
	tb.Helper()
	// A generous Redis timeout: on a loaded CI machine the default 100ms makes reads
	// fall back to Postgres, which is right in production but not what these tests
	// look at. TestRedisDown tests the timeout with its own cache.
	c, err := readthrough.New(db, e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func (e *env) widgets(tb testing.TB, opts readthrough.ModelOptions) *readthrough.Repository[Widget] {
	tb.Helper()
	r, err := readthrough.Register[Widget](e.cache(tb, e.db), opts)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// ownRedis starts a Redis of the test's own, to stop or pause, and returns it with a
// function registering Widget on it with RedisTimeout timeout, through a client that
// does not retry and honours deadlines.
func (e *env) ownRedis(tb testing.TB, opts integration.RedisOptions, timeout time.Duration) (*integration.Redis, func(readthrough.ModelOptions) *readthrough.Repository[Widget]) {
	tb.Helper()
	rd := integration.NewRedis(tb, opts)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), MaxRetries: -1, ContextTimeoutEnabled: true})
	tb.Cleanup(func() { rdb.Close() })
	return rd, func(mo readthrough.ModelOptions) *readthrough.Repository[Widget] {
		tb.Helper()
		c, err := readthrough.New(e.db, rdb, readthrough.Options{RedisTimeout: timeout})
		if err != nil {
			tb.Fatal(err)
		}
		repo, err := readthrough.Register[Widget](c, mo)
		if err != nil {
			tb.Fatal(err)
		}
		return repo
	}
}

// entry returns the cache entry a fill of row id through repo stores: it reads the row
// through repo until it is cached, and returns the key's value.
func (e *env) entry(tb testing.TB, repo *readthrough.Repository[Widget], id int64) []byte {
	tb.Helper()
	ctx := context.Background()
	key, err := repo.Key(id)
	if err != nil {
		tb.Fatal(err)
	}
	var entry []byte
	integration.Eventually(tb, "the row to be cached by a read", func() bool {
		if _, _, err := repo.Get(ctx, id); err != nil {
			tb.Fatal(err)
		}
		entry, err = e.rdb.Get(ctx, key).Bytes()
		return err == nil
	})
	return entry
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

// e0 is a Redis client that is never used to connect, for tests of configuration.
func e0() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true})
}
