package demo

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/pgcache/pgcache/invalidator"
)

// StartWorker runs an invalidation worker with opts until the returned stop is called,
// and returns once it streams (any gap flushed first).
func StartWorker(ctx context.Context, log *slog.Logger, rdb *redis.Client, opts invalidator.WorkerOptions) (stop func(), err error) {
	worker, err := invalidator.NewWorker(rdb, opts)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	g, wctx := errgroup.WithContext(wctx)
	g.Go(func() error { return worker.Run(wctx) })
	stop = func() {
		cancel()
		if err := g.Wait(); err != nil {
			log.Error("worker", "error", err)
		}
	}
	for !worker.Ready() {
		select {
		case <-wctx.Done():
			err := fmt.Errorf("worker stopped before it was ready: %w", g.Wait())
			stop()
			return nil, err
		case <-time.After(10 * time.Millisecond):
		}
	}
	return stop, nil
}
