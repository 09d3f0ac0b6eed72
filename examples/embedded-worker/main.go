// Embedded worker: run the invalidation worker inside your own process, next to your
// HTTP server or anything else, under one errgroup.
//
//	eval "$(scripts/env.sh)" && go run -C examples ./embedded-worker
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/examples/internal/demo"
	"github.com/pgcache/pgcache/invalidator"
)

type Account struct {
	ID      int64 `gorm:"primaryKey"`
	Balance int
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	// SIGTERM stops the worker after the transaction at hand is confirmed.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, log); err != nil {
		log.Error("embedded worker failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	pgURL, redisAddr, stopServers, err := demo.Servers(ctx, log)
	if err != nil {
		return err
	}
	defer stopServers()
	db, err := gorm.Open(postgres.Open(pgURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}
	if err := db.AutoMigrate(&Account{}); err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()

	w, err := invalidator.NewWorker(rdb, invalidator.WorkerOptions{
		Postgres:    pgURL,
		Stream:      cdc.Options{Slot: "embedded_example", Publication: "embedded_example", Tables: []string{"accounts"}, Logger: log},
		Invalidator: invalidator.Options{Prefix: "bank", Logger: log},
	})
	if err != nil {
		return err
	}

	// Stop after a few seconds so the example ends; a service would run until SIGTERM.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(ctx) })
	g.Go(func() error {
		// Your application's own work goes here; this one writes with raw SQL.
		for i := 0; ctx.Err() == nil; i++ {
			if err := db.Exec(`INSERT INTO accounts VALUES (?, 100) ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + 1`, i%10).Error; err != nil && ctx.Err() == nil {
				return err
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	s := w.Stats()
	fmt.Printf("worker handled %d transactions, %d row changes\n", s.Transactions, s.Changes)
	if s.Transactions == 0 {
		return errors.New("the worker handled no transaction in 5s: it never streamed (see the logs above)")
	}
	return nil
}
