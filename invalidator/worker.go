package invalidator

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/pgcache/pgcache/cdc"
)

// WorkerOptions configure a Worker.
type WorkerOptions struct {
	// Postgres is the connection string of a role with REPLICATION that owns the tables
	// (or may create the publication); replication=database is added.
	Postgres string
	// Stream configures the slot, the publication and the tables.
	Stream cdc.Options
	// Invalidator configures the key prefix and Redis retries.
	Invalidator Options
	// ServerCheckInterval is how often the worker reads the run ids of the Redis
	// masters, to flush its tables after a failover or a restart that may have lost
	// deletions Redis had acknowledged (see Invalidator.CheckServers). It bounds how long
	// such a loss leaves rows stale. Default 1s; negative turns the check off, which
	// is safe only with a single Redis that fsyncs every write (appendfsync always).
	ServerCheckInterval time.Duration
}

// Worker streams changes from Postgres into an Invalidator: the invalidation worker as a
// component, for embedding in a process of your own (cmd/pgcache-worker is one). It is
// safe for concurrent use.
type Worker struct {
	stream *cdc.Stream
	inv    *Invalidator
	slot   string
	// checkEvery is WorkerOptions.ServerCheckInterval with its default; 0 for off.
	checkEvery time.Duration
	// checked is set once the first server check is done (see watchServers).
	checked atomic.Bool
}

// NewWorker checks the options and returns a Worker; nothing connects until Run.
func NewWorker(rdb redis.UniversalClient, opts WorkerOptions) (*Worker, error) {
	inv, err := New(rdb, opts.Invalidator)
	if err != nil {
		return nil, err
	}
	stream, err := cdc.NewStream(opts.Postgres, opts.Stream, inv)
	if err != nil {
		return nil, fmt.Errorf("invalidator: %w", err)
	}
	check := opts.ServerCheckInterval
	switch {
	case check == 0:
		check = time.Second
	case check < 0:
		check = 0
	}
	return &Worker{stream: stream, inv: inv, slot: opts.Stream.Slot, checkEvery: check}, nil
}

// Run invalidates until ctx ends (then it returns nil, after confirming what was
// handled) or a fatal error (bad configuration, wal_level not logical, missing
// privileges or tables: see cdc.IsFatal). Connection failures are retried.
//
// Beside the stream, it checks the Redis servers every ServerCheckInterval, and, with
// a Purger, retries the purges waiting in the purge stream (Invalidator.RunPurges),
// those a previous run left included.
func (w *Worker) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.stream.Run(gctx) })
	if w.checkEvery != 0 {
		g.Go(func() error { return w.watchServers(gctx, w.checkEvery) })
	}
	g.Go(func() error { return w.inv.RunPurges(gctx) })
	return g.Wait()
}

// Ready reports whether the worker is streaming: any gap has been invalidated, the
// Redis servers checked (see WorkerOptions.ServerCheckInterval), and changes are being
// applied.
func (w *Worker) Ready() bool {
	return w.stream.Stats().Connected && (w.checkEvery == 0 || w.checked.Load())
}

// StreamStats returns the change stream's progress.
func (w *Worker) StreamStats() cdc.Stats { return w.stream.Stats() }

// Stats returns the invalidator's counters.
func (w *Worker) Stats() Stats { return w.inv.Stats() }
