package writeback_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgcache/pgcache/writeback"
)

// BenchmarkFlush measures write-back flush throughput: each iteration journals 20000
// writes of distinct rows (not timed), then times one flusher applying them all, from
// its start to an empty journal. It reports rows per second.
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
		b.StartTimer()
		start := time.Now()
		drain(b, f)
		elapsed += time.Since(start)
		total += rows
		if s := f.Stats(); s.Applied != rows {
			b.Fatalf("stats %+v, want %d applied", s, rows)
		}
	}
	b.ReportMetric(float64(total)/elapsed.Seconds(), "rows/s")
}
