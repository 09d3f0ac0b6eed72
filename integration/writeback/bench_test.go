package writeback_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/writeback"
)

// BenchmarkFlush measures write-back flush throughput: each iteration journals 20000
// writes of distinct rows (not timed), then times one flusher applying them all, from
// its start to an empty journal. It reports rows per second; the longest command
// Redis ran meanwhile (from its slow log), for Redis serves no other client while a
// script runs; and the latency of reads of Redis meanwhile (a GET every millisecond,
// in this process: p99).
func BenchmarkFlush(b *testing.B) {
	const rows = 20000
	e := newEnv(b, single)
	// The audit trigger doubles the cost of every row; applications' tables rarely
	// have one.
	if err := e.db.Exec(`DROP TRIGGER audit ON widgets`).Error; err != nil {
		b.Fatal(err)
	}
	repo := e.widgets(b)
	ctx := context.Background()
	var total int
	var elapsed time.Duration
	var reads []time.Duration
	var longest time.Duration
	for n := 0; n < b.N; n++ {
		b.StopTimer()
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for id := g; id < rows; id += 8 {
					w := Widget{ID: int64(id + 1), Name: fmt.Sprintf("r%d-v%d", id, n), Price: n}
					if err := repo.Save(ctx, &w); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		f := e.flusher(b, writeback.FlusherOptions{BatchSize: 1000})
		rctx, stopReads := context.WithCancel(ctx)
		var rwg sync.WaitGroup
		rwg.Go(func() { reads = append(reads, readWhile(rctx, b, e.rdb)...) })
		slowLog(ctx, b, e.rdb, true)
		b.StartTimer()
		start := time.Now()
		drain(b, f)
		elapsed += time.Since(start)
		b.StopTimer()
		stopReads()
		rwg.Wait()
		longest = max(longest, slowLog(ctx, b, e.rdb, false))
		total += rows
		if s := f.Stats(); s.Applied != rows {
			b.Fatalf("stats %+v, want %d applied", s, rows)
		}
	}
	b.ReportMetric(float64(total)/elapsed.Seconds(), "rows/s")
	slices.Sort(reads)
	if len(reads) > 0 {
		b.ReportMetric(float64(reads[len(reads)*99/100].Microseconds()), "read-p99-µs")
	}
	b.ReportMetric(float64(longest.Microseconds()), "longest-redis-command-µs")
}

// slowLog, with start, makes Redis log every command that takes 200µs or more, in a
// log emptied; else it returns the longest command logged and puts Redis' slow log
// back as it was.
func slowLog(ctx context.Context, tb testing.TB, rdb redis.UniversalClient, start bool) time.Duration {
	tb.Helper()
	if start {
		for _, err := range []error{
			rdb.ConfigSet(ctx, "slowlog-log-slower-than", "200").Err(),
			rdb.ConfigSet(ctx, "slowlog-max-len", "10000").Err(),
			rdb.SlowLogReset(ctx).Err(),
		} {
			if err != nil {
				tb.Fatal(err)
			}
		}
		return 0
	}
	logged, err := rdb.SlowLogGet(ctx, -1).Result()
	if err != nil {
		tb.Fatal(err)
	}
	var longest time.Duration
	for _, l := range logged {
		longest = max(longest, l.Duration)
	}
	if err := rdb.ConfigSet(ctx, "slowlog-log-slower-than", "10000").Err(); err != nil {
		tb.Fatal(err)
	}
	return longest
}

// readWhile GETs a key of its own every readEvery until ctx ends and returns each
// GET's latency: an application's reads beside the flush. Paced, not in a tight loop:
// a loop of GETs took as much of the process' CPU as the flusher did, and so of the
// flush's throughput on a 2-CPU machine.
func readWhile(ctx context.Context, tb testing.TB, rdb redis.UniversalClient) []time.Duration {
	const readEvery = time.Millisecond
	var out []time.Duration
	t := time.NewTicker(readEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
		start := time.Now()
		if err := rdb.Get(ctx, "bench-read").Err(); err != nil && err != redis.Nil && ctx.Err() == nil {
			tb.Error(err)
			return out
		}
		out = append(out, time.Since(start))
	}
}
