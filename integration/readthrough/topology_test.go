package readthrough_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration/fixture"
)

// The Redis a test runs on (fixture.OnBoth).
type topology = fixture.Topology

const (
	single  = fixture.SingleRedis
	cluster = fixture.RedisCluster
)

// newEnvOn is newEnv on the package's Redis of topology top.
func newEnvOn(tb testing.TB, top topology) *env {
	tb.Helper()
	if top == single {
		return newEnv(tb)
	}
	cl := servers.Cluster(tb)
	pgdb := servers.Postgres(tb).NewDatabase(tb)
	e := &env{dbURL: pgdb.RoleURL, rdb: cl.Client(tb), prefix: cl.Prefix(tb), queries: new(atomic.Int64)}
	e.db = e.openDB(tb)
	if err := e.db.AutoMigrate(&Widget{}); err != nil {
		tb.Fatal(err)
	}
	return e
}

// keysOf returns the keys matching pattern on every master.
func (e *env) keysOf(ctx context.Context, pattern string) []string {
	cc, ok := e.rdb.(*redis.ClusterClient)
	if !ok {
		return e.rdb.Keys(ctx, pattern).Val()
	}
	var mu sync.Mutex
	var out []string
	_ = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		ks := c.Keys(ctx, pattern).Val()
		mu.Lock()
		defer mu.Unlock()
		out = append(out, ks...)
		return nil
	})
	return out
}
