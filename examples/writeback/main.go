// Writeback: writes under writepolicy.WriteBack. Save returns once Redis holds the write
// (journaled, and the row's cached value); readers see it at once, and a flusher applies
// it to Postgres later, in batches. A write Postgres keeps refusing ends in the
// dead-letter stream.
//
//	eval "$(scripts/env.sh)" && go run -C examples ./writeback
//
// It starts Postgres and Redis in containers, or uses PGCACHE_POSTGRES_URL and
// PGCACHE_REDIS_ADDR (a single Redis; write-back runs on Sentinel and Redis Cluster too). It
// exits 1 if the cache did not behave as it says.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/examples/internal/demo"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

// Basket's CHECK constraint lets the example make a write Postgres refuses.
type Basket struct {
	ID    int64 `gorm:"primaryKey"` // write-back needs the key set by the caller: no serial ids
	Items int   `gorm:"check:items >= 0"`
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log); err != nil {
		log.Error("writeback failed", "error", err)
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
	// Write-back keeps pending writes in Redis: run it with persistence (appendonly) and
	// maxmemory-policy noeviction (or volatile-*) in production; see package writeback.
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	baskets, flusher, err := setup(ctx, log, db, rdb)
	if err != nil {
		return err
	}

	if err := saveAhead(ctx, db, baskets, flusher); err != nil {
		return err
	}
	// A write that breaks the CHECK constraint: Redis accepts it, Postgres will not.
	if err := baskets.Save(ctx, &Basket{ID: 2, Items: -1}); err != nil {
		return err
	}

	// 2. The flusher, under an errgroup like any other part of a service.
	flushCtx, stopFlusher := context.WithCancel(ctx)
	g, flushCtx := errgroup.WithContext(flushCtx)
	g.Go(func() error { return flusher.Run(flushCtx) })
	defer func() { stopFlusher(); _ = g.Wait() }() // on every return, stop it first
	if err := flushed(flushCtx, db, flusher); err != nil {
		return err
	}
	if err := deadLettered(ctx, baskets, flusher); err != nil {
		return err
	}

	// Stopping the flusher applies what it holds, then Run returns.
	stopFlusher()
	if err := g.Wait(); err != nil {
		return err
	}
	fmt.Printf("flusher stats: %+v\n", flusher.Stats())
	return nil
}

// setup makes the table and registers the write-back model and its flusher.
func setup(ctx context.Context, log *slog.Logger, db *gorm.DB, rdb *redis.Client) (*readthrough.Repository[Basket], *writeback.Flusher, error) {
	if err := db.Migrator().DropTable(&Basket{}); err != nil {
		return nil, nil, err
	}
	if err := db.AutoMigrate(&Basket{}); err != nil {
		return nil, nil, err
	}
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "writeback", Logger: log})
	if err != nil {
		return nil, nil, err
	}
	baskets, err := readthrough.Register[Basket](cache, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	if err != nil {
		return nil, nil, err
	}
	// The table was just made outside the library: drop what an earlier run left cached.
	if err := baskets.Invalidate(ctx, 1, 2); err != nil {
		return nil, nil, err
	}
	flusher, err := writeback.NewFlusher(db, rdb, writeback.FlusherOptions{
		Prefix:       "writeback",           // the cache's
		MaxAttempts:  3,                     // a write Postgres refuses 3 times is dead-lettered
		RetryBackoff: 20 * time.Millisecond, // (short, for the example)
		Logger:       log,
	})
	if err != nil {
		return nil, nil, err
	}
	return baskets, flusher, nil
}

// saveAhead is step 1: Save returns once Redis holds the write; Postgres does not have
// it yet.
//
// With Redis down, Save returns Redis' error and nothing was written: neither
// journaled nor pending, so retry or fail the request. (Under the invalidate and
// write-through policies a committed write succeeds with Redis down; here Redis is
// where the write goes.) A Save that timed out may still have happened, whole.
func saveAhead(ctx context.Context, db *gorm.DB, baskets *readthrough.Repository[Basket], flusher *writeback.Flusher) error {
	start := time.Now()
	if err := baskets.Save(ctx, &Basket{ID: 1, Items: 3}); err != nil {
		return err
	}
	saved := time.Since(start)
	var inPostgres int64
	if err := db.Model(&Basket{}).Where("id = 1").Count(&inPostgres).Error; err != nil {
		return err
	}
	b, ok, err := baskets.Get(ctx, 1)
	if err != nil || !ok || b.Items != 3 {
		return fmt.Errorf("basket 1 before the flush: %+v, found=%v, err=%v; want the pending write, 3 items", b, ok, err)
	}
	backlog, err := flusher.Backlog(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("1. Save took %v; readers see %d items; rows in Postgres: %d; backlog: %d\n",
		saved.Round(time.Microsecond), b.Items, inPostgres, backlog)
	if inPostgres != 0 || backlog == 0 {
		return fmt.Errorf("before any flusher ran, Postgres has %d rows and the backlog is %d; want 0 rows and a backlog", inPostgres, backlog)
	}
	return nil
}

// flushed is step 2: it waits for the running flusher to empty the journal and checks
// Postgres.
func flushed(ctx context.Context, db *gorm.DB, flusher *writeback.Flusher) error {
	err := waitFor(ctx, 5*time.Second, func() (bool, error) {
		n, err := flusher.Backlog(ctx)
		return n == 0, err
	})
	if err != nil {
		return fmt.Errorf("the flusher did not empty the journal: %w (stats %+v)", err, flusher.Stats())
	}
	var row Basket
	if err := db.First(&row, 1).Error; err != nil {
		return fmt.Errorf("basket 1 not in Postgres after the flush: %w", err)
	}
	fmt.Printf("2. flusher: backlog 0; Postgres has basket 1 with %d items\n", row.Items)
	if row.Items != 3 {
		return fmt.Errorf("basket 1 in Postgres has %d items, want 3", row.Items)
	}
	return nil
}

// deadLettered is step 3: basket 2 was dead-lettered: its pending write is dropped, so
// readers see Postgres' row (none), and the write waits in the dead-letter stream for a
// human.
func deadLettered(ctx context.Context, baskets *readthrough.Repository[Basket], flusher *writeback.Flusher) error {
	if _, ok, err := baskets.Get(ctx, 2); err != nil || ok {
		return fmt.Errorf("basket 2 after it was dead-lettered: found=%v, err=%v; want no row", ok, err)
	}
	key2, err := baskets.Key(2)
	if err != nil {
		return err
	}
	dead, err := flusher.DeadLetters(ctx, 100)
	if err != nil {
		return err
	}
	var last *writeback.DeadLetter // oldest first; an earlier run may have left some
	for i := range dead {
		if dead[i].Key == key2 {
			last = &dead[i]
		}
	}
	if last == nil {
		return fmt.Errorf("no dead letter for basket 2 (%s); flusher stats %+v", key2, flusher.Stats())
	}
	fmt.Printf("3. dead letter: %s after %d attempts: %s\n", last.Table, last.Attempts, last.Reason)
	return nil
}

// waitFor polls cond until it holds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
			}
			return fmt.Errorf("not within %v: %w", timeout, ctx.Err())
		case <-tick.C:
		}
	}
}
