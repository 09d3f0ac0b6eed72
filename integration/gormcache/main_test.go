package gormcache_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/gormcache"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

var servers integration.Shared

func TestMain(m *testing.M) { os.Exit(servers.Run(m)) }

// User is the model most tests cache: soft deletes, a nullable column, zero values, a
// has-many association and a field that is no column.
type User struct {
	ID        int64 `gorm:"primaryKey"`
	Name      string
	Age       int
	Email     *string
	Active    bool
	CreatedAt time.Time
	DeletedAt gorm.DeletedAt
	Notes     []Note
	Extra     string `gorm:"-"`
}

// Note is not registered: the plugin leaves it alone.
type Note struct {
	ID     int64 `gorm:"primaryKey"`
	UserID int64
	Body   string
}

// Member has a composite key declared in another order than the table's columns.
type Member struct {
	Num  int    `gorm:"primaryKey;autoIncrement:false"`
	Org  string `gorm:"primaryKey"`
	Role string
}

// Doc has a uuid key held in a string.
type Doc struct {
	ID    string `gorm:"type:uuid;primaryKey;default:gen_random_uuid()"`
	Title string
}

// env is one test's database and Redis prefix.
type env struct {
	dbURL  string
	rdb    *redis.Client
	prefix string
	plain  *gorm.DB // GORM without the plugin: the uncached answer
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	pgdb := servers.Postgres(tb).NewDatabase(tb)
	rd := servers.Redis(tb)
	e := &env{dbURL: pgdb.RoleURL, rdb: rd.Client(tb), prefix: rd.Prefix(tb)}
	e.plain = e.open(tb)
	if err := e.plain.Exec(`CREATE TABLE members (org text, num int, role text NOT NULL DEFAULT '', PRIMARY KEY (org, num))`).Error; err != nil {
		tb.Fatal(err)
	}
	if err := e.plain.AutoMigrate(&User{}, &Note{}, &Doc{}); err != nil {
		tb.Fatal(err)
	}
	return e
}

func (e *env) open(tb testing.TB) *gorm.DB {
	tb.Helper()
	return e.openWith(tb, &gorm.Config{})
}

func (e *env) openWith(tb testing.TB, cfg *gorm.Config) *gorm.DB {
	tb.Helper()
	cfg.Logger = logger.Discard
	db, err := gorm.Open(postgres.Open(e.dbURL), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	sqlDB, _ := db.DB()
	tb.Cleanup(func() { sqlDB.Close() })
	return db
}

// proc is one process: its own *gorm.DB with the plugin installed, its own Cache.
type proc struct {
	db      *gorm.DB
	plugin  *gormcache.Plugin
	users   *readthrough.Repository[User]
	members *readthrough.Repository[Member]
	docs    *readthrough.Repository[Doc]
}

func (e *env) proc(tb testing.TB, policy writepolicy.Policy) *proc {
	tb.Helper()
	return e.procWith(tb, policy, &gorm.Config{})
}

func (e *env) procWith(tb testing.TB, policy writepolicy.Policy, cfg *gorm.Config) *proc {
	tb.Helper()
	db := e.openWith(tb, cfg)
	p, err := gormcache.New(db, e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	opts := readthrough.ModelOptions{WritePolicy: policy}
	pr := &proc{db: db, plugin: p}
	if pr.users, err = gormcache.Register[User](p, opts); err != nil {
		tb.Fatal(err)
	}
	if pr.members, err = gormcache.Register[Member](p, opts); err != nil {
		tb.Fatal(err)
	}
	if pr.docs, err = gormcache.Register[Doc](p, opts); err != nil {
		tb.Fatal(err)
	}
	if err := db.Use(p); err != nil {
		tb.Fatal(err)
	}
	return pr
}

// reads adds up the cache reads of the process' repositories.
func (pr *proc) reads() uint64 {
	n := uint64(0)
	for _, s := range []readthrough.Stats{pr.users.Stats(), pr.members.Stats(), pr.docs.Stats()} {
		n += s.Hits + s.NegativeHits + s.Misses
	}
	return n
}

func (e *env) exec(tb testing.TB, sql string, args ...any) {
	tb.Helper()
	if err := e.plain.Exec(sql, args...).Error; err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// seed inserts the rows the query tests read: user 3 is soft-deleted, user 4 holds zero
// values and NULLs.
func (e *env) seed(tb testing.TB) {
	tb.Helper()
	e.exec(tb, `INSERT INTO users (id, name, age, email, active, created_at) VALUES
		(1, 'ann', 31, 'ann@example.com', true, '2024-01-02 03:04:05.123456+00'),
		(2, 'bob', 42, NULL, true, '1999-12-31 23:59:59+00'),
		(3, 'cat', 25, 'cat@example.com', false, '2020-06-01 00:00:00+00'),
		(4, '', 0, NULL, false, '2021-01-01 00:00:00+00'),
		(5, 'dan', 57, 'dan@example.com', true, '2022-02-02 02:02:02+00')`)
	e.exec(tb, `UPDATE users SET deleted_at = '2025-01-01 00:00:00+00' WHERE id = 3`)
	e.exec(tb, `INSERT INTO notes (user_id, body) VALUES (1, 'first'), (1, 'second')`)
	e.exec(tb, `INSERT INTO members (org, num, role) VALUES ('acme', 1, 'owner'), ('acme', 2, ''), ('beta', 1, 'guest')`)
	e.exec(tb, `INSERT INTO docs (id, title) VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'spec')`)
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}
