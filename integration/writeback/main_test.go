package writeback_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

var servers integration.Shared

func TestMain(m *testing.M) { os.Exit(servers.Run(m)) }

// Widget is the model the tests write back. Its table has a CHECK constraint (price
// not negative), for poison writes, and an audit trigger recording every row change,
// to count how often each write took effect.
type Widget struct {
	ID    int64 `gorm:"primaryKey"`
	Name  string
	Price int
}

const schemaSQL = `
CREATE TABLE widgets (
	id bigint PRIMARY KEY,
	name text NOT NULL DEFAULT '',
	price bigint NOT NULL DEFAULT 0 CONSTRAINT price_not_negative CHECK (price >= 0)
);
CREATE TABLE audit (seq bigserial PRIMARY KEY, op text NOT NULL, id bigint NOT NULL, name text NOT NULL);
CREATE FUNCTION audit_widgets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'DELETE' THEN
		INSERT INTO audit (op, id, name) VALUES (TG_OP, OLD.id, OLD.name);
		RETURN OLD;
	END IF;
	INSERT INTO audit (op, id, name) VALUES (TG_OP, NEW.id, NEW.name);
	RETURN NEW;
END $$;
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON widgets FOR EACH ROW EXECUTE FUNCTION audit_widgets();
`

// env is one test's database, Redis and key prefix.
type env struct {
	dbURL string
	// redisAddrs are the addresses of the Redis server, or of the masters of the
	// Cluster when cluster is set.
	redisAddrs []string
	cluster    bool
	db         *gorm.DB
	rdb        redis.UniversalClient
	prefix     string
}

// The Redis a test runs on (fixture.OnBoth).
type topology = fixture.Topology

const (
	single  = fixture.SingleRedis
	cluster = fixture.RedisCluster
)

// newEnv makes a database with the widgets schema and a prefix on the package's
// Redis of topology top.
func newEnv(tb testing.TB, top topology) *env {
	tb.Helper()
	if top == cluster {
		cl := servers.Cluster(tb)
		return newEnvOn(tb, &env{redisAddrs: cl.Addrs(), cluster: true, rdb: cl.Client(tb), prefix: cl.Prefix(tb)})
	}
	return newEnvRedis(tb, servers.Redis(tb))
}

// newEnvRedis is newEnv on the single Redis rd.
func newEnvRedis(tb testing.TB, rd *integration.Redis) *env {
	tb.Helper()
	return newEnvOn(tb, &env{redisAddrs: []string{rd.Addr()}, rdb: rd.Client(tb), prefix: rd.Prefix(tb)})
}

func newEnvOn(tb testing.TB, e *env) *env {
	pgdb := servers.Postgres(tb).NewDatabase(tb)
	e.dbURL = pgdb.RoleURL
	e.db = openDB(tb, e.dbURL)
	if err := e.db.Exec(schemaSQL).Error; err != nil {
		tb.Fatal(err)
	}
	return e
}

// shard returns the journal stream of the row whose value key is key (shard 0 for a
// string that is no row key).
func (e *env) shard(key string) string {
	k, ok := keys.KeyOfValue(key)
	if !ok {
		return keys.Prefix(e.prefix).JournalShard(0)
	}
	return keys.Prefix(e.prefix).JournalShard(keys.JournalShardOf(k))
}

// shards returns the journal's streams.
func (e *env) shards() []string {
	out := make([]string, keys.JournalShards)
	for i := range out {
		out[i] = keys.Prefix(e.prefix).JournalShard(i)
	}
	return out
}

// pendingKeys returns the pending records left under e's prefix, on every master.
func (e *env) pendingKeys(ctx context.Context) []string {
	var out []string
	scan := func(ctx context.Context, c *redis.Client) error {
		out = append(out, c.Keys(ctx, e.prefix+"*:p").Val()...)
		return nil
	}
	if cc, ok := e.rdb.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		_ = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			return scan(ctx, c)
		})
		return out
	}
	_ = scan(ctx, e.rdb.(*redis.Client))
	return out
}

func openDB(tb testing.TB, url string) *gorm.DB {
	tb.Helper()
	db, err := gorm.Open(postgres.Open(url), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		tb.Fatal(err)
	}
	sqlDB, _ := db.DB()
	tb.Cleanup(func() { sqlDB.Close() })
	return db
}

// widgets returns a write-back repository of Widget in a cache of its own (a process).
func (e *env) widgets(tb testing.TB) *readthrough.Repository[Widget] {
	tb.Helper()
	c, err := readthrough.New(e.db, e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	r, err := readthrough.Register[Widget](c, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// flusher returns a flusher of e's prefix with fast test settings unless opts says.
func (e *env) flusher(tb testing.TB, opts writeback.FlusherOptions) *writeback.Flusher {
	tb.Helper()
	opts.Prefix = e.prefix
	if opts.FlushInterval == 0 {
		opts.FlushInterval = 5 * time.Millisecond
	}
	if opts.RetryBackoff == 0 {
		opts.RetryBackoff = time.Millisecond
	}
	f, err := writeback.NewFlusher(e.db, e.rdb, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// drain runs f until the journal is empty, then stops it; it fails the test when that
// takes longer than a deadline.
func drain(tb testing.TB, f *writeback.Flusher) {
	tb.Helper()
	drainHooked(tb, f, nil)
}

// drainHooked drains as drain does, with the flusher's test hooks h.
func drainHooked(tb testing.TB, f *writeback.Flusher, h *testhooks.Flush) {
	tb.Helper()
	ctx, cancel := context.WithCancel(testhooks.WithFlush(context.Background(), h))
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	err := poll(30*time.Second, func() (bool, error) {
		n, err := f.Backlog(ctx)
		return n == 0, err
	})
	cancel()
	if rerr := <-done; rerr != nil {
		tb.Fatalf("flusher Run: %v", rerr)
	}
	if err != nil {
		tb.Fatalf("journal not drained: %v (flusher stats %+v)", err, f.Stats())
	}
}

// poll calls cond every few milliseconds until it reports true, for at most d.
func poll(d time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	var last error
	for {
		ok, err := cond()
		if ok && err == nil {
			return nil
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v (last error: %v)", d, last)
		}
		t := time.NewTimer(5 * time.Millisecond)
		<-t.C
	}
}

// rows returns the widgets in Postgres by id.
func (e *env) rows(tb testing.TB) map[int64]Widget {
	tb.Helper()
	var ws []Widget
	if err := e.db.Order("id").Find(&ws).Error; err != nil {
		tb.Fatal(err)
	}
	out := make(map[int64]Widget, len(ws))
	for _, w := range ws {
		out[w.ID] = w
	}
	return out
}

// applications returns, per row, the names written to it in Postgres, in order
// ("" for a delete), from the audit trigger.
func (e *env) applications(tb testing.TB) map[int64][]string {
	tb.Helper()
	type change struct {
		Op   string
		ID   int64
		Name string
	}
	var cs []change
	if err := e.db.Raw(`SELECT op, id, name FROM audit ORDER BY seq`).Scan(&cs).Error; err != nil {
		tb.Fatal(err)
	}
	out := make(map[int64][]string)
	for _, c := range cs {
		if c.Op == "DELETE" {
			c.Name = ""
		}
		out[c.ID] = append(out[c.ID], c.Name)
	}
	return out
}

// version returns the write number in a name "r<row>-v<n>" (-1 for "", a delete).
func version(name string) int {
	_, v, ok := strings.Cut(name, "-v")
	if !ok {
		return -1
	}
	n, _ := strconv.Atoi(v)
	return n
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// withControl runs test twice, as parallel subtests: as name, and as its control
// (control set) controlName, which shows that the test can fail.
func withControl(t *testing.T, name, controlName string, test func(t *testing.T, control bool)) {
	for _, control := range []bool{false, true} {
		t.Run(map[bool]string{false: name, true: controlName}[control], func(t *testing.T) {
			t.Parallel()
			test(t, control)
		})
	}
}
