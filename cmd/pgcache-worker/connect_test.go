package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// workerRun is a worker started by startRun: stop ends it and returns its exit code.
type workerRun struct {
	addr string // of its HTTP server
	logs *integration.LogBuffer
	exit chan int
	stop context.CancelFunc
}

// startRun runs the worker with args and env in this process until the test ends or
// wait is called.
func startRun(t *testing.T, args []string, env map[string]string) *workerRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &workerRun{addr: freeAddr(t), logs: new(integration.LogBuffer), exit: make(chan int, 1), stop: cancel}
	go func() {
		w.exit <- run(ctx, append(args, "-listen", w.addr), func(k string) string { return env[k] }, w.logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.exit:
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop")
		}
	})
	return w
}

// wait returns the worker's exit code once it exits on its own, within a minute.
func (w *workerRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-w.exit:
		w.exit <- code // for the cleanup
		return code
	case <-time.After(time.Minute):
		t.Fatalf("the worker did not exit; logs:\n%s", w.logs)
		return 0
	}
}

// invalidates checks that a raw SQL change of a cached row is invalidated: the worker
// reached Redis and Postgres as configured.
func invalidates(t *testing.T, db *fixtureDB, w *workerRun) {
	t.Helper()
	ctx := t.Context()
	// Ready first: a gap flush at start would delete the key too, and prove nothing.
	integration.Eventually(t, "/readyz 200", func() bool {
		select {
		case code := <-w.exit:
			w.exit <- code
			t.Fatalf("the worker exited %d; logs:\n%s", code, w.logs)
		default:
		}
		resp, err := http.Get("http://" + w.addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if _, _, err := db.repo.Get(ctx, int64(1)); err != nil {
		t.Fatal(err)
	}
	key, _ := db.repo.Key(int64(1))
	if db.rdb.Exists(ctx, key).Val() != 1 {
		t.Fatal("row 1 was not cached")
	}
	if err := db.db.Exec(`UPDATE widgets SET name = 'changed' WHERE id = 1`).Error; err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "the worker to delete the changed row's key", func() bool {
		select {
		case code := <-w.exit:
			w.exit <- code
			t.Fatalf("the worker exited %d; logs:\n%s", code, w.logs)
		default:
		}
		return db.rdb.Exists(ctx, key).Val() == 0
	})
}

// fixtureDB is a widgets table with a cached repository on a given Redis client.
type fixtureDB struct {
	pg   *integration.Database
	db   *gorm.DB
	rdb  redis.UniversalClient
	repo *readthrough.Repository[fixture.Widget]
}

func newFixtureDB(t *testing.T, rdb redis.UniversalClient, prefix string) *fixtureDB {
	t.Helper()
	return newFixtureDBOn(t, servers.Postgres(t).NewDatabase(t), rdb, prefix)
}

// newFixtureDBOn is newFixtureDB in the database pg.
func newFixtureDBOn(t *testing.T, pg *integration.Database, rdb redis.UniversalClient, prefix string) *fixtureDB {
	t.Helper()
	db := fixture.Open(t, pg.RoleURL)
	if err := db.AutoMigrate(&fixture.Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(`INSERT INTO widgets VALUES (1, 'old')`).Error; err != nil {
		t.Fatal(err)
	}
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := readthrough.Register[fixture.Widget](cache, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &fixtureDB{pg: pg, db: db, rdb: rdb, repo: repo}
}

// TestWorkerRedisTLS: the worker reaches a Redis that speaks only TLS and requires a
// client certificate, through a rediss:// URL from the environment and the CA and
// client certificate files. The controls: without the CA, or without TLS, the worker
// cannot reach it and exits 6 saying why.
func TestWorkerRedisTLS(t *testing.T) {
	t.Parallel()
	pki, err := integration.NewPKI("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	rd := integration.NewRedis(t, integration.RedisOptions{TLS: pki.RedisTLS(true)})
	dir := t.TempDir()
	files := map[string][]byte{"ca.pem": pki.CA, "client.pem": pki.ClientCert, "client.key": pki.ClientKey}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	prefix := rd.Prefix(t)
	f := newFixtureDB(t, rd.Client(t), prefix)
	env := map[string]string{"PGCACHE_POSTGRES_URL": f.pg.RoleURL, "PGCACHE_REDIS_URL": "rediss://" + rd.Addr(), "PGCACHE_PREFIX": prefix}
	tlsFlags := []string{"-redis-cert-file", filepath.Join(dir, "client.pem"), "-redis-key-file", filepath.Join(dir, "client.key")}
	base := []string{"-tables", "widgets", "-slot", "s_" + f.pg.Name, "-status-interval", "100ms"}

	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no CA", append(base, tlsFlags...), env, "certificate"},
		{"no TLS", base, map[string]string{"PGCACHE_POSTGRES_URL": f.pg.RoleURL, "PGCACHE_REDIS_ADDR": rd.Addr()}, "redis unreachable"},
	} {
		w := startRun(t, c.args, c.env)
		if code := w.wait(t); code != exitNoRedis || !strings.Contains(w.logs.String(), c.want) {
			t.Fatalf("%s: exit %d, want %d and logs saying %q:\n%s", c.name, code, exitNoRedis, c.want, w.logs)
		}
	}
	w := startRun(t, append(append(base, tlsFlags...), "-redis-ca-file", filepath.Join(dir, "ca.pem")), env)
	invalidates(t, f, w)
}

// aclRule reads the documented least ACL (docs/redis-acl.conf) for prefix and
// password, as the arguments of ACL SETUSER after the user's name.
func aclRule(t *testing.T, prefix, password string) (user string, rule []any) {
	t.Helper()
	b, err := os.ReadFile("../../docs/redis-acl.conf")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 3 || fields[0] != "user" {
			continue
		}
		for _, f := range fields[2:] {
			f = strings.ReplaceAll(strings.ReplaceAll(f, "PREFIX", prefix), "PASSWORD", password)
			rule = append(rule, f)
		}
		return fields[1] + "_" + prefix, rule
	}
	t.Fatal("docs/redis-acl.conf has no user line")
	return "", nil
}

// TestWorkerRedisACL runs an application (fills, write-through and invalidate writes,
// write-back writes) and the worker (invalidation, the write-back flusher) as a Redis
// user with the documented least ACL, and the control as a user without one of its
// commands (EVALSHA), whose reads go to Postgres and count Redis errors.
func TestWorkerRedisACL(t *testing.T) {
	t.Parallel()
	rd := servers.Redis(t)
	admin := rd.Client(t)
	prefix := rd.Prefix(t)
	user, rule := aclRule(t, prefix, "s3cret")
	ctx := t.Context()
	setUser := func(name string, rule []any) {
		if err := admin.Do(ctx, append([]any{"ACL", "SETUSER", name, "reset"}, rule...)...).Err(); err != nil {
			t.Fatalf("ACL SETUSER %s: %v", name, err)
		}
		t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", name) })
	}
	setUser(user, rule)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), Username: user, Password: "s3cret", ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	f := newFixtureDB(t, rdb, prefix)

	w := startRun(t, []string{"-tables", "widgets", "-slot", "s_" + f.pg.Name, "-status-interval", "100ms", "-writeback", "-writeback-consumer", "acl"},
		map[string]string{"PGCACHE_POSTGRES_URL": f.pg.RoleURL, "PGCACHE_REDIS_URL": "redis://" + user + "@" + rd.Addr(),
			"PGCACHE_REDIS_PASSWORD": "s3cret", "PGCACHE_PREFIX": prefix})
	invalidates(t, f, w)
	if s := f.repo.Stats(); s.Errors != 0 {
		t.Fatalf("the application as %s counted %d Redis errors: the documented ACL lacks a command", user, s.Errors)
	}
	if !strings.Contains(w.logs.String(), "pgcache-worker starting") || strings.Contains(w.logs.String(), "NOPERM") || strings.Contains(w.logs.String(), "no permissions") {
		t.Fatalf("worker logs:\n%s", w.logs)
	}
	writeBackAsUser(t, f, prefix)

	// Control: without EVALSHA the same application cannot fill.
	lesser := "lesser_" + prefix
	setUser(lesser, append(rule, "-evalsha"))
	crippled := redis.NewClient(&redis.Options{Addr: rd.Addr(), Username: lesser, Password: "s3cret", ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = crippled.Close() })
	g := newFixtureDB(t, crippled, rd.Prefix(t))
	if _, _, err := g.repo.Get(ctx, int64(1)); err != nil {
		t.Fatal(err)
	}
	if s := g.repo.Stats(); s.Errors == 0 || s.Fills != 0 {
		t.Fatalf("without EVALSHA: %+v, want Redis errors and no fill", s)
	}
}

// Basket is a write-back model of the ACL test.
type Basket struct {
	ID    int64 `gorm:"primaryKey"`
	Items int
}

// writeBackAsUser saves a write-back row through f's Redis client and waits for the
// worker's flusher to apply it to Postgres.
func writeBackAsUser(t *testing.T, f *fixtureDB, prefix string) {
	t.Helper()
	if err := f.db.AutoMigrate(&Basket{}); err != nil {
		t.Fatal(err)
	}
	cache, err := readthrough.New(f.db, f.rdb, readthrough.Options{Prefix: prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	baskets, err := readthrough.Register[Basket](cache, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	if err != nil {
		t.Fatal(err)
	}
	if err := baskets.Save(t.Context(), &Basket{ID: 1, Items: 3}); err != nil {
		t.Fatalf("write-back Save: %v", err)
	}
	if b, ok, err := baskets.Get(t.Context(), int64(1)); err != nil || !ok || b.Items != 3 {
		t.Fatalf("write-back Get: %+v %t %v", b, ok, err)
	}
	integration.Eventually(t, "the worker's flusher to apply the write", func() bool {
		var b Basket
		return f.db.Where("id = 1").Take(&b).Error == nil && b.Items == 3
	})
}

// TestWorkerSentinel runs the worker through Redis Sentinel (-redis names the
// sentinels, -redis-sentinel-master the master) across a failover: it invalidates
// before, and after the replica is promoted, reaching the new master on its own.
func TestWorkerSentinel(t *testing.T) {
	t.Parallel()
	sen := integration.NewSentinel(t)
	prefix := "sentinel"
	f := newFixtureDB(t, sen.Client(t), prefix)
	slot := "s_" + f.pg.Name
	w := startRun(t, []string{"-tables", "widgets", "-slot", slot, "-status-interval", "100ms",
		"-redis", strings.Join(sen.Addrs(), ","), "-redis-sentinel-master", integration.SentinelMaster, "-prefix", prefix},
		map[string]string{"PGCACHE_POSTGRES_URL": f.pg.RoleURL})
	invalidates(t, f, w)

	sc := redis.NewSentinelClient(&redis.Options{Addr: sen.Addrs()[0]})
	t.Cleanup(func() { _ = sc.Close() })
	if err := sc.Failover(t.Context(), integration.SentinelMaster).Err(); err != nil {
		t.Fatal(err)
	}
	if err := sen.WaitPromoted(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The worker flushes the tables once it sees the new master (a server change; or,
	// when the failover lost its record of the old one, a gap), then records the new
	// master's run id: wait for that, so that the flush cannot delete the entry the
	// next check fills, in place of the worker's invalidation.
	seen := keys.Prefix(prefix).Servers(slot)
	integration.Eventually(t, "the worker to flush the tables for the new master", func() bool {
		info, err := f.rdb.Info(t.Context(), "server").Result()
		return err == nil && strings.Contains(info, "run_id:"+f.rdb.Get(t.Context(), seen).Val()+"\r\n")
	})
	if err := f.db.Exec(`UPDATE widgets SET name = 'old' WHERE id = 1`).Error; err != nil {
		t.Fatal(err)
	}
	// Read from Postgres, uncached, while the application's circuit breaker, opened by
	// the failover's errors, cools down; then cached again.
	key, _ := f.repo.Key(int64(1))
	integration.Eventually(t, "row 1 read new and cached again after the failover", func() bool {
		row, ok, err := f.repo.Get(t.Context(), int64(1))
		return err == nil && ok && row.Name == "old" && f.rdb.Exists(t.Context(), key).Val() == 1
	})
	invalidates(t, f, w)
}
