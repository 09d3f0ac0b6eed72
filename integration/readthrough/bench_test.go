package readthrough_test

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm/schema"

	"github.com/pgcache/pgcache/readthrough"
)

// The benchmarks of one run share a baseline: BenchmarkBaselineRedisGet reads the same
// bytes that BenchmarkGetHit decodes, BenchmarkBaselineRedisGetDecode decodes them too,
// and BenchmarkBaselineGormFirst is the uncached query. Compare with benchstat; see
// docs for ratios.

func benchEnv(b *testing.B) (*env, *readthrough.Repository[Widget], string) {
	b.Helper()
	e := newEnv(b)
	e.exec(b, `INSERT INTO widgets (id, name, price) VALUES (1, 'a widget of typical size for a cache benchmark', 42)`)
	repo := e.widgets(b, readthrough.ModelOptions{})
	if _, _, err := repo.Get(context.Background(), int64(1)); err != nil {
		b.Fatal(err)
	}
	key, _ := repo.Key(int64(1))
	return e, repo, key
}

func BenchmarkBaselineRedisGet(b *testing.B) {
	e, _, key := benchEnv(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.rdb.Get(ctx, key).Bytes(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBaselineRedisGetDecode is the bound issue 16 sets a hit's allocations
// against: BenchmarkBaselineRedisGet's GET, then the entry decoded into the model with
// the default codec (readthrough.Binary, a model's when ModelOptions sets no Codec)
// through the codec's public API, and nothing else the library does: no key built, no
// deadline, no sharing of GETs, no stats, no scope. A row's entry is one tag byte ('v')
// and the codec's bytes of the row's column record: one value per column GORM maps, in
// the order of the schema's DBNames. Each value is set on a reused row through GORM's
// field setter, as a load sets it; the row must be the one a hit returns.
func BenchmarkBaselineRedisGetDecode(b *testing.B) {
	e, repo, key := benchEnv(b)
	ctx := context.Background()
	sch, err := schema.Parse(&Widget{}, &sync.Map{}, e.db.NamingStrategy)
	if err != nil {
		b.Fatal(err)
	}
	var fields []*schema.Field
	for _, name := range sch.DBNames {
		if f := sch.FieldsByDBName[name]; f != nil && f.Readable {
			fields = append(fields, f)
		}
	}
	cols := make([]driver.Value, len(fields))
	var row Widget
	rv := reflect.ValueOf(&row).Elem()
	b.ReportAllocs()
	for b.Loop() {
		entry, err := e.rdb.Get(ctx, key).Bytes()
		if err != nil || len(entry) == 0 || entry[0] != 'v' {
			b.Fatalf("GET %s: %q, %v: want a row's entry", key, entry, err)
		}
		if err := (readthrough.Binary{}).DecodeColumns(entry[1:], cols); err != nil {
			b.Fatal(err)
		}
		row = Widget{}
		for i, f := range fields {
			if err := f.Set(ctx, rv, cols[i]); err != nil {
				b.Fatal(f.DBName, err)
			}
		}
		clear(cols)
	}
	if hit, ok, err := repo.Get(ctx, int64(1)); err != nil || !ok || hit != row {
		b.Fatalf("decoded %+v, a hit returns %+v (%v, %v)", row, hit, ok, err)
	}
}

func BenchmarkGetHit(b *testing.B) {
	_, repo, _ := benchEnv(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, err := repo.Get(ctx, int64(1)); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
	if s := repo.Stats(); s.Misses != 1 {
		b.Fatalf("stats %+v: the benchmark missed", s)
	}
}

func BenchmarkBaselineGormFirst(b *testing.B) {
	e, _, _ := benchEnv(b)
	b.ReportAllocs()
	for b.Loop() {
		var w Widget
		if err := e.db.First(&w, int64(1)).Error; err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBaselineRedisGetParallel is BenchmarkGetHitParallel's baseline (the bench
// program's hit_vs_raw_ops_ratio_16): raw GETs from as many goroutines.
func BenchmarkBaselineRedisGetParallel(b *testing.B) {
	e, _, key := benchEnv(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.rdb.Get(ctx, key).Bytes(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkGetHitParallel(b *testing.B) {
	_, repo, _ := benchEnv(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := repo.Get(ctx, int64(1)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// spreadEnv is benchEnv with spreadRows rows, all cached, and their keys: the parallel
// benchmarks over many keys read different rows at once, as the bench program's
// hit_vs_raw_ops_ratio_16 does, so concurrent reads do not share one GET.
func spreadEnv(b *testing.B) (*env, *readthrough.Repository[Widget], []string) {
	b.Helper()
	e, repo, _ := benchEnv(b)
	e.exec(b, `INSERT INTO widgets (id, name, price) SELECT i, 'a widget of typical size for a cache benchmark', 42 FROM generate_series(2, 1000) i`)
	ids := make([]any, spreadRows)
	ks := make([]string, spreadRows)
	for i := range ids {
		ids[i] = int64(i + 1)
		ks[i], _ = repo.Key(int64(i + 1))
	}
	if _, err := repo.GetMany(context.Background(), ids...); err != nil {
		b.Fatal(err)
	}
	return e, repo, ks
}

const spreadRows = 1000

// readSpread runs read from 16 goroutines on two CPUs, each call with the next of
// spreadRows rows (i from 0).
func readSpread(b *testing.B, read func(ctx context.Context, i int64) error) {
	b.Helper()
	ctx := context.Background()
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := read(ctx, n.Add(1)%spreadRows); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBaselineRedisGetParallelSpread is BenchmarkGetHitParallelSpread's baseline:
// raw GETs of the same thousand entries from as many goroutines.
func BenchmarkBaselineRedisGetParallelSpread(b *testing.B) {
	e, _, ks := spreadEnv(b)
	readSpread(b, func(ctx context.Context, i int64) error { return e.rdb.Get(ctx, ks[i]).Err() })
}

// BenchmarkBaselineRedisGetParallelSpreadAutoPipelined is the same raw GETs through
// go-redis' AutoPipeliner (its blocking face), as concurrent hits are batched: the
// bound for BenchmarkGetHitParallelSpread's batched reads.
func BenchmarkBaselineRedisGetParallelSpreadAutoPipelined(b *testing.B) {
	e, _, ks := spreadEnv(b)
	ap, err := e.rdb.AutoPipeline()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ap.Close() })
	readSpread(b, func(ctx context.Context, i int64) error { return ap.Get(ctx, ks[i]).Err() })
}

func BenchmarkGetHitParallelSpread(b *testing.B) {
	_, repo, _ := spreadEnv(b)
	readSpread(b, func(ctx context.Context, i int64) error {
		if _, ok, err := repo.Get(ctx, i+1); err != nil || !ok {
			return fmt.Errorf("Get(%d) = %v, %v", i+1, ok, err)
		}
		return nil
	})
	if s := repo.Stats(); s.Misses != spreadRows {
		b.Fatalf("stats %+v: the benchmark missed", s)
	}
}

// BenchmarkGetMiss measures the fenced miss path: lease, query, fill. Each iteration
// invalidates the row first.
func BenchmarkGetMiss(b *testing.B) {
	_, repo, _ := benchEnv(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := repo.Invalidate(ctx, int64(1)); err != nil {
			b.Fatal(err)
		}
		if _, ok, err := repo.Get(ctx, int64(1)); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkBaselineCacheAsideMiss is BenchmarkGetMiss's baseline (the bench program's
// miss_vs_cache_aside_ratio): a cache-aside miss of the same row, unfenced: a GET that
// misses, GORM First, a SET of the row's JSON. Each iteration deletes the key first.
func BenchmarkBaselineCacheAsideMiss(b *testing.B) {
	e, _, _ := benchEnv(b)
	ctx := context.Background()
	const key = "bench:aside:1"
	b.ReportAllocs()
	for b.Loop() {
		if err := e.rdb.Del(ctx, key).Err(); err != nil {
			b.Fatal(err)
		}
		if err := e.rdb.Get(ctx, key).Err(); err != redis.Nil {
			b.Fatalf("GET after DEL: %v", err)
		}
		var w Widget
		if err := e.db.WithContext(ctx).First(&w, int64(1)).Error; err != nil {
			b.Fatal(err)
		}
		val, err := json.Marshal(&w)
		if err != nil {
			b.Fatal(err)
		}
		if err := e.rdb.Set(ctx, key, val, time.Hour).Err(); err != nil {
			b.Fatal(err)
		}
	}
}
