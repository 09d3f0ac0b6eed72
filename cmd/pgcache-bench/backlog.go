package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pgcache/pgcache/invalidator"
)

// backlogTxs is how many transactions the backlog holds, of rows/backlogTxs rows each.
const backlogTxs = 1000

// workerRun runs a Worker until stopped, and can run it again: the backlog figure
// stops it while the backlog is committed.
type workerRun struct {
	w      *invalidator.Worker
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs the worker until stop or ctx ends.
func (r *workerRun) start(ctx context.Context) {
	wctx, cancel := context.WithCancel(ctx)
	r.cancel, r.done = cancel, make(chan struct{})
	go func() {
		defer close(r.done)
		if err := r.w.Run(wctx); err != nil {
			r.log.Error("worker", "error", err)
		}
	}()
}

// ready waits until the worker streams (its gap flush done), or ctx ends.
func (r *workerRun) ready(ctx context.Context) error {
	for !r.w.Ready() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.done:
			return errors.New("the invalidation worker stopped before it was ready; its error is logged")
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// stop stops the worker and waits for it to return; it does nothing when the worker
// is not running.
func (r *workerRun) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel = nil
}

// backlog times the draining of a backlog of small transactions: backlogTxs UPDATEs of
// rows/backlogTxs rows each, committed while the worker is stopped, then the worker
// started and timed from its start (connection and setup included) until it has
// handled every change.
func (b *bench) backlog(ctx context.Context, wr *workerRun, r *results) error {
	b.log.Info("invalidation backlog", "transactions", backlogTxs, "rows", rows)
	before := wr.w.Stats().Changes
	wr.stop()
	per := rows / backlogTxs
	for i := range backlogTxs {
		err := b.db.WithContext(ctx).Exec(`UPDATE widgets SET price = price + 1 WHERE id > ? AND id <= ?`, i*per, (i+1)*per).Error
		if err != nil {
			wr.start(ctx)
			return err
		}
	}
	start := time.Now()
	wr.start(ctx)
	for wr.w.Stats().Changes < before+backlogTxs*uint64(per) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	r.InvalidationBacklogRowsS = float64(backlogTxs*per) / time.Since(start).Seconds()
	return nil
}
