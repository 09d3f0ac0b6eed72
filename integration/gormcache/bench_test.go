package gormcache_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pgcache/pgcache/writepolicy"
)

// BenchmarkFirst compares db.First through the plugin on a hit with the repository's
// Get of the same cached row, and with an uncached db.First. Each reports its median
// latency (p50-ns) besides the mean: the plugin's goal is at most 1.3 times the
// repository's p50, since GORM builds its statement either way.
func BenchmarkFirst(b *testing.B) {
	e := newEnv(b)
	e.seed(b)
	pr := e.proc(b, writepolicy.Invalidate)
	ctx := context.Background()
	if _, _, err := pr.users.Get(ctx, int64(1)); err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name string
		read func() error
	}{
		{"plugin hit", func() error { var u User; return pr.db.First(&u, 1).Error }},
		{"repository Get hit", func() error { _, _, err := pr.users.Get(ctx, int64(1)); return err }},
		{"uncached First", func() error { var u User; return e.plain.First(&u, 1).Error }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var lat []time.Duration
			for b.Loop() {
				start := time.Now()
				if err := c.read(); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		})
	}
	if s := pr.users.Stats(); s.Misses != 1 {
		b.Fatalf("stats %+v: the hit benchmarks missed", s)
	}
}
