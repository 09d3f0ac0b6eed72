package readthrough_test

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// TestRegistryAfterRedisRestart: a Redis restarted without persistence loses the
// registry of cached versions; the next fill (and the next write-back write) records it
// again before its lease, so the invalidator, even a freshly started one, knows every
// version that has cached rows. A process that announced once would keep filling rows
// the invalidator cannot find.
func TestRegistryAfterRedisRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'one'), (2, 'two')`)
	ctx := ctxT(t)
	rd := integration.NewRedis(t, integration.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	repos := make(map[writepolicy.Policy]*readthrough.Repository[Widget])
	for _, p := range []writepolicy.Policy{writepolicy.Invalidate, writepolicy.WriteBack} {
		c, err := readthrough.New(e.db, rdb, readthrough.Options{Prefix: "reg"})
		if err != nil {
			t.Fatal(err)
		}
		if repos[p], err = readthrough.Register[Widget](c, readthrough.ModelOptions{WritePolicy: p, Version: "v-" + strings.ReplaceAll(p.String(), "-", "")}); err != nil {
			t.Fatal(err)
		}
	}
	registered := func(p writepolicy.Policy) bool {
		r := repos[p]
		return rdb.HExists(ctx, "reg:models", r.Table()+"|"+r.Version()).Val()
	}
	use := func() {
		t.Helper()
		if _, _, err := repos[writepolicy.Invalidate].Get(ctx, int64(1)); err != nil {
			t.Fatal(err)
		}
		if err := repos[writepolicy.WriteBack].Save(ctx, &Widget{ID: 2, Name: "pending"}); err != nil {
			t.Fatal(err)
		}
	}
	use()
	if !registered(writepolicy.Invalidate) || !registered(writepolicy.WriteBack) {
		t.Fatal("versions not registered by the first fill and write")
	}
	if err := rd.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// The restart dropped everything; reconnecting may take the client a moment.
	deadline := time.Now().Add(10 * time.Second)
	for rdb.Ping(ctx).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatal("redis did not come back")
		}
		<-time.After(10 * time.Millisecond)
	}
	if n := rdb.Exists(ctx, "reg:models").Val(); n != 0 {
		t.Fatal("the registry survived a restart without persistence; the test needs it lost")
	}
	use()
	if !registered(writepolicy.Invalidate) {
		t.Fatal("a fill after the restart did not register its version: the invalidator cannot find the row it cached")
	}
	if !registered(writepolicy.WriteBack) {
		t.Fatal("a write-back write after the restart did not register its version")
	}
}
