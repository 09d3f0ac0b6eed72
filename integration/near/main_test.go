package near_test

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

// Widget is a model of plain values: the near tier copies it by value.
type Widget struct {
	ID   int64 `gorm:"primaryKey"`
	Name string
	At   time.Time
}

// env is one test's database and Redis.
type env struct {
	db     *gorm.DB
	url    string
	rd     *integration.Redis
	rdb    *redis.Client
	prefix string
}

// newEnv returns a database of the test's own with the widgets table holding row 1,
// on the shared Redis, or on rd when given (tests that flush, kill or restart it).
func newEnv(t *testing.T, rd *integration.Redis) *env {
	t.Helper()
	pg := servers.Postgres(t).NewDatabase(t)
	if rd == nil {
		rd = servers.Redis(t)
	}
	e := &env{url: pg.RoleURL, rd: rd, prefix: rd.Prefix(t)}
	e.rdb = redis.NewClient(&redis.Options{Addr: rd.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { e.rdb.Close() })
	e.db = e.open(t)
	if err := e.db.AutoMigrate(&Widget{}); err != nil {
		t.Fatal(err)
	}
	e.exec(t, `INSERT INTO widgets (id, name, at) VALUES (1, 'v0', now())`)
	return e
}

func (e *env) open(t *testing.T) *gorm.DB {
	t.Helper()
	db, err := gorm.Open(postgres.Open(e.url), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	return db
}

func (e *env) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if err := e.db.Exec(sql, args...).Error; err != nil {
		t.Fatal(err)
	}
}

// process returns a new Cache with its own connection pools, standing in for another
// process, closed when the test ends.
func (e *env) process(t *testing.T) *readthrough.Cache {
	t.Helper()
	return e.processWith(t, context.Background())
}

// processWith is process with a context for the Cache's test hooks (testhooks.Near).
func (e *env) processWith(t *testing.T, hooks context.Context) *readthrough.Cache {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: e.rd.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	c, err := readthrough.New(e.open(t).WithContext(hooks), rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var nearOn = readthrough.ModelOptions{Near: readthrough.NearOptions{MaxEntries: 1000}}

func register[T any](t *testing.T, c *readthrough.Cache, opts readthrough.ModelOptions) *readthrough.Repository[T] {
	t.Helper()
	r, err := readthrough.Register[T](c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func get[T any](t *testing.T, r *readthrough.Repository[T], id int64) T {
	t.Helper()
	row, ok, err := r.Get(context.Background(), id)
	if err != nil || !ok {
		t.Fatalf("Get(%d) = %v, %v", id, ok, err)
	}
	return row
}

// inNear reads id through r until a read is answered by the near tier, which needs
// tracking up and the row read from Redis once.
func inNear[T any](t *testing.T, r *readthrough.Repository[T], id int64) {
	t.Helper()
	integration.Eventually(t, "the row in the near tier", func() bool {
		before := r.Stats().NearHits
		get(t, r, id)
		return r.Stats().NearHits > before
	})
}

// dropped waits until a read of id through r misses the near tier: r's process has
// received the invalidation of id (and, the messages being ordered, every one Redis
// sent before it).
func dropped[T any](t *testing.T, r *readthrough.Repository[T], id int64) {
	t.Helper()
	integration.Eventually(t, "the near tier to drop the row", func() bool {
		before := r.Stats().NearMisses
		get(t, r, id)
		return r.Stats().NearMisses > before
	})
}

func name(t *testing.T, r *readthrough.Repository[Widget], id int64) string {
	t.Helper()
	return get(t, r, id).Name
}
