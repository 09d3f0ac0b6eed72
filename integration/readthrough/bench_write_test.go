package readthrough_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// BenchmarkSave measures the latency of one write of a row, per write policy, against
// its baselines in the same run: a plain GORM Save of the row (what invalidate and
// write-through add to) and a Redis SET of the row's cache entry (what a write-back
// Save, one script, is measured against). It reports p50 and p99 besides ns/op.
func BenchmarkSave(b *testing.B) {
	const name = "a widget of typical size for a cache benchmark"
	for _, bc := range []struct {
		name string
		op   func(b *testing.B, e *env) func(ctx context.Context, i int) error
	}{
		{"baseline-gorm-save", func(b *testing.B, e *env) func(context.Context, int) error {
			return func(ctx context.Context, i int) error {
				return e.db.WithContext(ctx).Save(&Widget{ID: 1, Name: name, Price: i}).Error
			}
		}},
		{"baseline-redis-set", func(b *testing.B, e *env) func(context.Context, int) error {
			repo := e.widgets(b, readthrough.ModelOptions{})
			if err := e.db.Save(&Widget{ID: 1, Name: name, Price: 42}).Error; err != nil {
				b.Fatal(err)
			}
			entry := e.entry(b, repo, 1)
			key := e.prefix + "{bench}:v"
			return func(ctx context.Context, i int) error { return e.rdb.Set(ctx, key, entry, time.Hour).Err() }
		}},
		{writepolicy.Invalidate.String(), savePolicy(writepolicy.Invalidate, name)},
		{writepolicy.WriteThrough.String(), savePolicy(writepolicy.WriteThrough, name)},
		{writepolicy.WriteBack.String(), savePolicy(writepolicy.WriteBack, name)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newEnv(b)
			op := bc.op(b, e)
			ctx := context.Background()
			if err := op(ctx, 0); err != nil { // warm: connections, scripts, registry
				b.Fatal(err)
			}
			lat := make([]time.Duration, 0, 1024)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				start := time.Now()
				if err := op(ctx, i); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			reportLatency(b, lat)
		})
	}
}

func savePolicy(p writepolicy.Policy, name string) func(b *testing.B, e *env) func(context.Context, int) error {
	return func(b *testing.B, e *env) func(context.Context, int) error {
		repo := e.widgets(b, readthrough.ModelOptions{WritePolicy: p})
		return func(ctx context.Context, i int) error {
			return repo.Save(ctx, &Widget{ID: 1, Name: name, Price: i})
		}
	}
}

// reportLatency reports the median and 99th percentile of lat, in microseconds.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(lat[len(lat)/2]), "p50-µs")
	b.ReportMetric(us(lat[len(lat)*99/100]), "p99-µs")
}
