// Readthrough: the smallest cached GORM model. Get serves a row from Redis, or loads it
// from Postgres and caches it; a row that does not exist is cached as missing.
//
//	eval "$(scripts/env.sh)" && go run -C examples ./readthrough
//
// It starts Postgres and Redis in containers, or uses PGCACHE_POSTGRES_URL and
// PGCACHE_REDIS_ADDR. It exits 1 if the cache did not behave as it says.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/examples/internal/demo"
	"github.com/pgcache/pgcache/readthrough"
)

type User struct {
	ID   int64 `gorm:"primaryKey"`
	Name string
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log); err != nil {
		log.Error("readthrough failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	pgURL, redisAddr, stop, err := demo.Servers(ctx, log)
	if err != nil {
		return err
	}
	defer stop()
	db, err := gorm.Open(postgres.Open(pgURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	users, err := setup(ctx, log, db, rdb)
	if err != nil {
		return err
	}
	if err := missThenHit(ctx, users); err != nil {
		return err
	}
	if err := notFound(ctx, users); err != nil {
		return err
	}
	return lifetimes(ctx, rdb, users)
}

// setup makes the users table with user 1 and registers the cached model.
func setup(ctx context.Context, log *slog.Logger, db *gorm.DB, rdb *redis.Client) (*readthrough.Repository[User], error) {
	if err := db.AutoMigrate(&User{}); err != nil {
		return nil, err
	}
	if err := db.Exec(`INSERT INTO users (id, name) VALUES (1, 'Ada') ON CONFLICT (id) DO UPDATE SET name = excluded.name`).Error; err != nil {
		return nil, err
	}
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "readthrough", Logger: log})
	if err != nil {
		return nil, err
	}
	users, err := readthrough.Register[User](cache, readthrough.ModelOptions{
		TTL:         10 * time.Minute, // each entry lives 10 min, give or take TTLJitter
		TTLJitter:   0.1,              // (±10%), so rows cached together expire apart
		NegativeTTL: 30 * time.Second, // "no such row" is cached for 30 s
	})
	if err != nil {
		return nil, err
	}
	// The INSERT above was raw SQL and no invalidation worker runs here, so tell the
	// cache (this also makes a second run start cold).
	if err := users.Invalidate(ctx, 1, 404); err != nil {
		return nil, err
	}
	return users, nil
}

// missThenHit: the first Get misses and loads the row from Postgres; the second is
// served by Redis.
func missThenHit(ctx context.Context, users *readthrough.Repository[User]) error {
	for range 2 {
		u, ok, err := users.Get(ctx, 1)
		if err != nil || !ok || u.Name != "Ada" {
			return fmt.Errorf("user 1: got %+v, found=%v, err=%v; want Ada", u, ok, err)
		}
	}
	s := users.Stats()
	fmt.Printf("user 1 read twice: misses %d, hits %d, database queries %d\n", s.Misses, s.Hits, s.Loads)
	if s.Misses != 1 || s.Hits != 1 || s.Loads != 1 {
		return fmt.Errorf("want one miss, one hit and one query, got %+v", s)
	}
	return nil
}

// notFound: a row that does not exist is not an error: ok is false, and the answer is
// cached.
func notFound(ctx context.Context, users *readthrough.Repository[User]) error {
	for range 2 {
		if _, ok, err := users.Get(ctx, 404); err != nil || ok {
			return fmt.Errorf("user 404: found=%v, err=%v; want not found", ok, err)
		}
	}
	s := users.Stats()
	fmt.Printf("user 404 read twice: not found; negative hits %d, database queries %d\n", s.NegativeHits, s.Loads)
	if s.NegativeHits != 1 || s.Loads != 2 {
		return fmt.Errorf("want the second read of user 404 answered by Redis, got %+v", s)
	}
	return nil
}

// lifetimes checks the entries' lifetimes, as set in ModelOptions.
func lifetimes(ctx context.Context, rdb *redis.Client, users *readthrough.Repository[User]) error {
	for _, c := range []struct {
		id       int64
		min, max time.Duration
	}{{1, 9 * time.Minute, 11 * time.Minute}, {404, 1, 30 * time.Second}} {
		key, err := users.Key(c.id)
		if err != nil {
			return err
		}
		ttl, err := rdb.PTTL(ctx, key).Result()
		if err != nil {
			return err
		}
		fmt.Printf("%s expires in %v\n", key, ttl.Round(time.Second))
		if ttl < c.min || ttl > c.max {
			return fmt.Errorf("%s expires in %v, want %v to %v", key, ttl, c.min, c.max)
		}
	}
	return nil
}
