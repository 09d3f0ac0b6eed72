package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	gocache "github.com/go-redis/cache/v9"
	"github.com/redis/rueidis"

	"github.com/pgcache/pgcache/readthrough"
)

// The other libraries' local tiers, measured in the same run as pgcache's near cache
// (issue 14): go-redis/cache with its TinyLFU local cache, and rueidis' server-assisted
// client-side cache (DoCache). Both cache the same bytes as pgcache's Redis entry for
// each row, copied to keys of their own, and hand the caller a copy of those bytes: no
// decode into a Widget, which pgcache's near hit does (a struct copy for this model).
const (
	compareHot = 1000
	// staleSamples keys are deleted by another client, one every localTTL/staleSamples.
	staleSamples = 100
	// localTTL is go-redis/cache's local TTL in the staleness measurement: the only
	// thing that ends its local copy after another process's write.
	localTTL = time.Second
	// staleCap bounds each staleness sample; a sample still stale then counts as staleCap.
	staleCap = 2 * localTTL
)

// compareRows copies pgcache's Redis entry for rows 1..compareHot to prefix+id.
func (b *bench) compareRows(ctx context.Context, repo *readthrough.Repository[Widget], prefix string) ([]string, error) {
	keys := make([]string, compareHot)
	for i := range keys {
		id := int64(i + 1)
		if _, _, err := repo.Get(ctx, id); err != nil {
			return nil, err
		}
		key, _ := repo.Key(id)
		v, err := b.rdb.Get(ctx, key).Bytes()
		if err != nil {
			return nil, fmt.Errorf("compare: pgcache entry of row %d: %w", id, err)
		}
		keys[i] = fmt.Sprintf("%s%d", prefix, id)
		if err := b.rdb.Set(ctx, keys[i], v, time.Hour).Err(); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// localFigures are one library's local-hit figures.
type localFigures struct {
	p50ns, opsS16, allocs float64
}

// measureLocalHit measures hit, which must answer from the local tier.
func (b *bench) measureLocalHit(ctx context.Context, hit func(i int) error) (localFigures, error) {
	var f localFigures
	lat, err := b.latencies(ctx, hit)
	if err != nil {
		return f, err
	}
	f.p50ns = float64(percentile(lat, 50).Nanoseconds())
	if f.opsS16, err = b.opsPerSec(ctx, 16, hit); err != nil {
		return f, err
	}
	f.allocs = allocsPerRun(1000, func() { _ = hit(7) })
	return f, nil
}

// countingLocal counts the misses of go-redis/cache's local tier, to check that a hit
// measurement measured local hits.
type countingLocal struct {
	*gocache.TinyLFU
	misses atomic.Int64
}

func (c *countingLocal) Get(key string) ([]byte, bool) {
	v, ok := c.TinyLFU.Get(key)
	if !ok {
		c.misses.Add(1)
	}
	return v, ok
}

// goRedisCache measures go-redis/cache's local hit and its staleness after another
// client's DEL.
func (b *bench) goRedisCache(ctx context.Context, repo *readthrough.Repository[Widget], r *results) error {
	b.log.Info("compare: go-redis/cache")
	keys, err := b.compareRows(ctx, repo, "cmp:goredis:")
	if err != nil {
		return err
	}
	local := &countingLocal{TinyLFU: gocache.NewTinyLFU(10_000, time.Hour)}
	c := gocache.New(&gocache.Options{Redis: b.rdb, LocalCache: local})
	get := func(i int) error {
		var v []byte
		return c.Get(ctx, keys[i%compareHot], &v)
	}
	for i := range keys {
		if err := get(i); err != nil {
			return err
		}
	}
	local.misses.Store(0)
	f, err := b.measureLocalHit(ctx, get)
	if err != nil {
		return err
	}
	if n := local.misses.Load(); n > 0 {
		return fmt.Errorf("go-redis/cache: %d local misses while measuring hits", n)
	}
	r.GoRedisCacheHitP50ns, r.GoRedisCacheHitOpsS16, r.GoRedisCacheAllocsPerHit = f.p50ns, f.opsS16, f.allocs

	// Staleness: a local TTL of 1s without its random extra (up to 10% by default).
	ttlLocal := gocache.NewTinyLFU(10_000, localTTL)
	ttlLocal.UseRandomizedTTL(0)
	sc := gocache.New(&gocache.Options{Redis: b.rdb, LocalCache: ttlLocal})
	for i := range staleSamples {
		var v []byte
		if err := sc.Get(ctx, keys[i], &v); err != nil {
			return err
		}
		if _, ok := ttlLocal.Get(keys[i]); !ok {
			return fmt.Errorf("go-redis/cache: %s not in the local cache after a Get", keys[i])
		}
	}
	stale, err := staleness(ctx, func(i int) error { return b.rdb.Del(ctx, keys[i]).Err() }, func(i int) (bool, error) {
		var v []byte
		err := sc.Get(ctx, keys[i], &v)
		if errors.Is(err, gocache.ErrCacheMiss) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return err
	}
	r.GoRedisCacheStaleP50ms, r.GoRedisCacheStaleP99ms = ms(percentile(stale, 50)), ms(percentile(stale, 99))
	return nil
}

// rueidisCache measures rueidis' client-side cache (DoCache) hit and its staleness
// after another client's DEL (until Redis' invalidation reaches the client).
func (b *bench) rueidisCache(ctx context.Context, repo *readthrough.Repository[Widget], r *results) error {
	b.log.Info("compare: rueidis client-side cache")
	keys, err := b.compareRows(ctx, repo, "cmp:rueidis:")
	if err != nil {
		return err
	}
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{b.redisAddr}})
	if err != nil {
		return fmt.Errorf("rueidis: %w", err)
	}
	defer client.Close()
	do := func(i int) rueidis.RedisResult {
		return client.DoCache(ctx, client.B().Get().Key(keys[i%compareHot]).Cache(), time.Hour)
	}
	hit := func(i int) error {
		res := do(i)
		if _, err := res.AsBytes(); err != nil {
			return err
		}
		if !res.IsCacheHit() {
			return fmt.Errorf("rueidis: %s answered by Redis while measuring hits", keys[i%compareHot])
		}
		return nil
	}
	for i := range keys {
		if err := inRueidis(do, i); err != nil {
			return err
		}
	}
	f, err := b.measureLocalHit(ctx, hit)
	if err != nil {
		return err
	}
	r.RueidisHitP50ns, r.RueidisHitOpsS16, r.RueidisAllocsPerHit = f.p50ns, f.opsS16, f.allocs

	stale, err := staleness(ctx, func(i int) error { return b.rdb.Del(ctx, keys[i]).Err() }, func(i int) (bool, error) {
		_, err := do(i).AsBytes()
		if rueidis.IsRedisNil(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return err
	}
	r.RueidisStaleP50ms, r.RueidisStaleP99ms = ms(percentile(stale, 50)), ms(percentile(stale, 99))
	return nil
}

// inRueidis reads key i until rueidis answers it from its client-side cache.
func inRueidis(do func(int) rueidis.RedisResult, i int) error {
	for range 1000 {
		res := do(i)
		if err := res.Error(); err != nil {
			return err
		}
		if res.IsCacheHit() {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("rueidis: key %d never answered from its client-side cache", i)
}

// nearStaleness measures pgcache's near cache the same way: rows 101..200 are deleted
// from Redis by another client (as another process's write or the invalidator does)
// and read until a Get is not answered by the near tier.
func (b *bench) nearStaleness(ctx context.Context, repo *readthrough.Repository[Widget], r *results) error {
	id := func(i int) int64 { return int64(101 + i) }
	for i := range staleSamples {
		if err := inNear(ctx, repo, id(i)); err != nil {
			return err
		}
	}
	stale, err := staleness(ctx, func(i int) error {
		key, _ := repo.Key(id(i))
		return b.rdb.Del(ctx, key).Err()
	}, func(i int) (bool, error) {
		before := repo.Stats().NearHits
		_, _, err := repo.Get(ctx, id(i))
		return repo.Stats().NearHits > before, err
	})
	if err != nil {
		return err
	}
	r.NearStaleP50ms, r.NearStaleP99ms = ms(percentile(stale, 50)), ms(percentile(stale, 99))
	return nil
}

// staleness deletes staleSamples keys through del, one every localTTL/staleSamples (so
// each write lands at a different point of a local copy's life), and reads each deleted
// key through stale until its reader stops answering from its local copy. It returns,
// sorted, how long after each delete was sent the first read that was not answered
// from the local copy started; a sample still stale after staleCap counts as staleCap.
func staleness(ctx context.Context, del func(i int) error, stale func(i int) (bool, error)) ([]time.Duration, error) {
	deleted := make([]time.Time, staleSamples)
	done := make([]bool, staleSamples)
	var out []time.Duration
	start := time.Now()
	for next := 0; len(out) < staleSamples; {
		if next < staleSamples && time.Since(start) >= time.Duration(next)*localTTL/staleSamples {
			deleted[next] = time.Now()
			if err := del(next); err != nil {
				return nil, err
			}
			next++
		}
		for i := range next {
			if done[i] {
				continue
			}
			// Timed before the read: a read that misses its local tier also pays
			// its library's miss path, which is not staleness.
			since := time.Since(deleted[i])
			s, err := stale(i)
			if err != nil {
				return nil, err
			}
			if !s || since >= staleCap {
				done[i] = true
				out = append(out, min(since, staleCap))
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// The polling loop must not starve the goroutine that receives invalidations
		// (two CPUs): each library's receiver gets the same chance.
		runtime.Gosched()
	}
	slices.Sort(out)
	return out, nil
}
