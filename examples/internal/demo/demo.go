// Package demo gives the examples their servers: the ones named by PGCACHE_POSTGRES_URL
// and PGCACHE_REDIS_ADDR, or containers started through the test harness.
package demo

import (
	"context"
	"log/slog"
	"os"

	"github.com/pgcache/pgcache/integration"
)

// Servers returns a Postgres connection string (a role with REPLICATION that owns its
// database) and a Redis address, and a func that stops what was started.
func Servers(ctx context.Context, log *slog.Logger) (pgURL, redisAddr string, stop func(), err error) {
	pgURL, redisAddr = os.Getenv("PGCACHE_POSTGRES_URL"), os.Getenv("PGCACHE_REDIS_ADDR")
	if pgURL != "" && redisAddr != "" {
		return pgURL, redisAddr, func() {}, nil
	}
	log.Info("starting Postgres and Redis containers (set PGCACHE_POSTGRES_URL and PGCACHE_REDIS_ADDR to use your own)")
	pg, err := integration.StartPostgres(ctx, integration.PostgresOptions{})
	if err != nil {
		return "", "", nil, err
	}
	db, err := pg.CreateDatabase(ctx)
	if err != nil {
		_ = pg.Close(ctx)
		return "", "", nil, err
	}
	rd, err := integration.StartRedis(ctx, integration.RedisOptions{})
	if err != nil {
		_ = pg.Close(ctx)
		return "", "", nil, err
	}
	return db.RoleURL, rd.Addr(), func() {
		ctx := context.WithoutCancel(ctx)
		_ = rd.Close(ctx)
		_ = pg.Close(ctx)
	}, nil
}
