// Cluster: the same cache on a Redis Cluster. Pass a *redis.ClusterClient (or any
// redis.UniversalClient): a row's value and lease keys share a hash slot, and
// multi-gets are pipelined per node.
//
//	eval "$(scripts/env.sh)" && go run -C examples ./cluster
//
// It starts a three-master cluster in a container, or uses PGCACHE_REDIS_CLUSTER
// (comma-separated addresses) and PGCACHE_POSTGRES_URL.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/readthrough"
)

type Item struct {
	ID   int64 `gorm:"primaryKey"`
	Name string
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log); err != nil {
		log.Error("cluster example failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	pgURL, addrs, stop, err := servers(ctx, log)
	if err != nil {
		return err
	}
	defer stop()
	db, err := gorm.Open(postgres.Open(pgURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}
	if err := db.AutoMigrate(&Item{}); err != nil {
		return err
	}
	if err := db.Exec(`INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 300) g ON CONFLICT DO NOTHING`).Error; err != nil {
		return err
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ","), ContextTimeoutEnabled: true})
	defer rdb.Close()
	// A multi-get's pipeline goes to every master at once; give it more than the
	// default 100ms, so that a slow machine does not turn its fills into fallbacks.
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "cluster", RedisTimeout: time.Second})
	if err != nil {
		return err
	}
	items, err := readthrough.Register[Item](cache, readthrough.ModelOptions{})
	if err != nil {
		return err
	}
	ids := make([]any, 300)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	// Learn the cluster's slot map and connect to every master now, rather than within
	// the first read's Redis timeout (100ms by default), past which a read falls back to
	// Postgres and caches nothing.
	if err := rdb.ForEachMaster(ctx, func(ctx context.Context, master *redis.Client) error {
		return master.Ping(ctx).Err()
	}); err != nil {
		return err
	}
	rows, err := items.GetMany(ctx, ids...)
	if err != nil {
		return err
	}
	if len(rows) != len(ids) {
		return fmt.Errorf("GetMany returned %d items, want %d", len(rows), len(ids))
	}
	return spread(ctx, rdb, items, ids)
}

// servers returns PGCACHE_POSTGRES_URL and PGCACHE_REDIS_CLUSTER, or starts Postgres
// and a three-master Redis Cluster in containers; stop removes what it started.
func servers(ctx context.Context, log *slog.Logger) (pgURL, addrs string, stop func(), err error) {
	pgURL, addrs = os.Getenv("PGCACHE_POSTGRES_URL"), os.Getenv("PGCACHE_REDIS_CLUSTER")
	if pgURL != "" && addrs != "" {
		return pgURL, addrs, func() {}, nil
	}
	log.Info("starting Postgres and a three-master Redis Cluster in containers")
	pg, err := integration.StartPostgres(ctx, integration.PostgresOptions{})
	if err != nil {
		return "", "", nil, err
	}
	cl, err := integration.StartRedisCluster(ctx, integration.RedisOptions{})
	if err != nil {
		pg.Close(context.WithoutCancel(ctx))
		return "", "", nil, err
	}
	stop = func() {
		cl.Close(context.WithoutCancel(ctx))
		pg.Close(context.WithoutCancel(ctx))
	}
	return pg.URL(), strings.Join(cl.Addrs(), ","), stop, nil
}

// spread checks that every item is cached on the master of its key, and that the items
// landed on more than one master.
func spread(ctx context.Context, rdb *redis.ClusterClient, items *readthrough.Repository[Item], ids []any) error {
	perNode := map[string]int{}
	for _, id := range ids {
		key, _ := items.Key(id)
		node, err := rdb.MasterForKey(ctx, key)
		if err != nil {
			return err
		}
		if n, err := node.Exists(ctx, key).Result(); err != nil || n != 1 {
			return fmt.Errorf("item %v is not cached on its master %s (exists=%d, err=%v; stats %+v)", id, node.Options().Addr, n, err, items.Stats())
		}
		perNode[node.Options().Addr]++
	}
	fmt.Printf("300 items cached across %d masters: %v\n", len(perNode), perNode)
	fmt.Printf("stats: %+v\n", items.Stats())
	if len(perNode) < 2 {
		return errors.New("all 300 items landed on one master: is this a cluster?")
	}
	return nil
}
