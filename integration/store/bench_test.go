package store_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
)

// populate creates keys unrelated to the cache in Redis until it holds n of them, in
// scripts of 100,000 SETs.
var populate = redis.NewScript(`
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do redis.call('SET', 'unrelated:' .. i, 'x') end
return 0`)

// BenchmarkFlushTable measures a whole-table invalidation of a table with 1,000 cached
// rows while Redis holds other keys (none, then a million): "scan" is the flush the
// invalidator used before (SCAN MATCH the table's pattern over the keyspace, UNLINK),
// "index" the walk of the table's index (FlushTable). Each iteration caches the rows
// again, off the clock. The Redis is the benchmark's own, so no other test's keys count.
func BenchmarkFlushTable(b *testing.B) {
	const rows = 1000
	rd := integration.NewRedis(b, integration.RedisOptions{})
	rdb := rd.Client(b)
	ctx := context.Background()
	st := store.New(rdb, time.Minute, "bench")
	sp, err := keys.NewSpace("bench", "public.widgets", "v1")
	if err != nil {
		b.Fatal(err)
	}
	m := store.NewModel(sp, time.Hour)
	ks := make([]keys.Key, rows)
	for i := range ks {
		ks[i] = sp.Key(strconv.Itoa(i))
	}
	cacheRows := func(b *testing.B) {
		lease(b, st, m, ks...)
	}
	flushes := []struct {
		name  string
		flush func() (int, error)
	}{
		{"scan", func() (int, error) { return st.DeleteMatching(ctx, sp.TablePattern()) }},
		{"index", func() (int, error) { return st.FlushTable(ctx, sp) }},
	}
	have := 0
	for _, unrelated := range []int{0, 1_000_000} {
		for have < unrelated {
			next := min(have+100_000, unrelated)
			if err := populate.Run(ctx, rdb, []string{"unrelated:x"}, have+1, next).Err(); err != nil {
				b.Fatal(err)
			}
			have = next
		}
		for _, f := range flushes {
			b.Run(fmt.Sprintf("%s/unrelated=%d", f.name, unrelated), func(b *testing.B) {
				for range b.N {
					b.StopTimer()
					cacheRows(b)
					b.StartTimer()
					n, err := f.flush()
					if err != nil {
						b.Fatal(err)
					}
					if n < rows {
						b.Fatalf("flushed %d keys, want at least %d", n, rows)
					}
				}
				b.ReportMetric(float64(rows), "rows")
			})
		}
	}
}
