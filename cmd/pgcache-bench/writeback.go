package main

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

// Account is the write-back model: its own table, so its journal holds only these writes.
type Account struct {
	ID      int64 `gorm:"primaryKey"`
	Owner   string
	Balance int64
}

// flushRows is how many journaled writes writeBack's flusher applies: enough for the
// flusher's start (its consumer group, its first statements) to weigh little.
const flushRows = 20_000

// writeBack measures write-back Save latency, then how fast a flusher applies the
// journal those saves built, topped up to flushRows writes by saves from 8 goroutines
// (one write per row, so nothing coalesces away).
func (b *bench) writeBack(ctx context.Context, r *results) error {
	b.log.Info("write-back")
	if err := b.db.Migrator().DropTable(&Account{}); err != nil {
		return err
	}
	if err := b.db.AutoMigrate(&Account{}); err != nil {
		return err
	}
	cache, err := readthrough.New(b.db, b.rdb, readthrough.Options{Prefix: "benchwb"})
	if err != nil {
		return err
	}
	accounts, err := readthrough.Register[Account](cache, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	if err != nil {
		return err
	}
	lat, err := b.latencies(ctx, func(i int) error {
		return accounts.Save(ctx, &Account{ID: int64(i + 1), Owner: "owner", Balance: int64(i)})
	})
	if err != nil {
		return err
	}
	p50 := us(percentile(lat, 50))
	r.WritebackSaveP50us = &p50

	var saves errgroup.Group
	for g := range 8 {
		saves.Go(func() error {
			for i := len(lat) + g; i < flushRows; i += 8 {
				if err := accounts.Save(ctx, &Account{ID: int64(i + 1), Owner: "owner", Balance: int64(i)}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := saves.Wait(); err != nil {
		return err
	}
	pending := uint64(max(len(lat), flushRows))
	b.log.Info("write-back flush", "rows", pending)
	f, err := writeback.NewFlusher(b.db, b.rdb, writeback.FlusherOptions{Prefix: "benchwb"})
	if err != nil {
		return err
	}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- f.Run(fctx) }()
	for {
		s := f.Stats()
		if s.Applied+s.Superseded+s.DeadLettered >= pending {
			break
		}
		select {
		case err := <-done:
			stop()
			return fmt.Errorf("flusher stopped: %w", err)
		case <-ctx.Done():
			stop()
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	rate := float64(pending) / time.Since(start).Seconds()
	r.WritebackFlushRowsPerS = &rate
	stop()
	return <-done
}
