package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/pgcache/pgcache/readthrough"
)

// nearBench measures the near cache (ModelOptions.Near) against the Redis-tier hit
// measured in the same run (readPath): a hit's latency and allocations, throughput
// with 16 goroutines, and the notification delay from a Redis DEL to the near tier's
// drop of the row.
func (b *bench) nearBench(ctx context.Context, r *results) error {
	b.log.Info("near cache")
	c, err := readthrough.New(b.db, b.rdb, readthrough.Options{Prefix: "bench"})
	if err != nil {
		return err
	}
	defer c.Close()
	repo, err := readthrough.Register[Widget](c, readthrough.ModelOptions{TTL: time.Hour, Near: readthrough.NearOptions{MaxEntries: 10_000}})
	if err != nil {
		return err
	}
	const hot = 1000
	for id := int64(1); id <= hot; id++ {
		if err := inNear(ctx, repo, id); err != nil {
			return err
		}
	}
	hit := func(i int) error {
		_, ok, err := repo.Get(ctx, int64(i%hot+1))
		if err == nil && !ok {
			err = fmt.Errorf("row %d missing", i%hot+1)
		}
		return err
	}
	before := repo.Stats()
	lat, err := b.latencies(ctx, hit)
	if err != nil {
		return err
	}
	r.NearHitP50ns = float64(percentile(lat, 50).Nanoseconds())
	if r.NearHitOpsS16, err = b.opsPerSec(ctx, 16, hit); err != nil {
		return err
	}
	r.NearHitRatioToRedis = r.NearHitOpsS16 / r.CachedHitOpsS16
	after := repo.Stats()
	if misses := after.NearMisses - before.NearMisses; misses*100 > after.NearHits-before.NearHits {
		return fmt.Errorf("near cache: %d misses against %d hits while measuring hits", misses, after.NearHits-before.NearHits)
	}
	r.NearAllocsPerHit = allocsPerRun(1000, func() { _ = hit(7) })
	if err := b.nearDelay(ctx, c, repo, r); err != nil {
		return err
	}
	// The same staleness measurement as the other libraries', and their hits, in this run.
	if err := b.nearStaleness(ctx, repo, r); err != nil {
		return err
	}
	if err := b.goRedisCache(ctx, repo, r); err != nil {
		return err
	}
	return b.rueidisCache(ctx, repo, r)
}

// nearDelay measures, 200 times, the time from sending a DEL of a row's key (which
// another process's write or the invalidator would send) to the near tier's receipt of
// its invalidation.
func (b *bench) nearDelay(ctx context.Context, c *readthrough.Cache, repo *readthrough.Repository[Widget], r *results) error {
	var delays []time.Duration
	for i := range 200 {
		id := int64(i%100 + 1)
		if err := inNear(ctx, repo, id); err != nil {
			return err
		}
		key, _ := repo.Key(id)
		seen := c.Stats().NearInvalidations
		start := time.Now()
		if err := b.rdb.Del(ctx, key).Err(); err != nil {
			return err
		}
		for c.Stats().NearInvalidations == seen {
			if time.Since(start) > 10*time.Second {
				return fmt.Errorf("near cache: no invalidation of %s within 10s", key)
			}
			runtime.Gosched()
		}
		delays = append(delays, time.Since(start))
	}
	slices.Sort(delays)
	r.NearInvalidationP50ms = ms(percentile(delays, 50))
	r.NearInvalidationP99ms = ms(percentile(delays, 99))
	return nil
}

// inNear reads id until the near tier answers it.
func inNear(ctx context.Context, repo *readthrough.Repository[Widget], id int64) error {
	for range 1000 {
		before := repo.Stats().NearHits
		if _, _, err := repo.Get(ctx, id); err != nil {
			return err
		}
		if repo.Stats().NearHits > before {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("near cache: row %d never answered in process (is tracking up?)", id)
}

// allocsPerRun is testing.AllocsPerRun without the testing package.
func allocsPerRun(n int, f func()) float64 {
	f()
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for range n {
		f()
	}
	runtime.ReadMemStats(&m1)
	return float64(m1.Mallocs-m0.Mallocs) / float64(n)
}
