package store

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/keys"
)

// noSend is a go-redis hook that answers every command without sending it.
type noSend struct{}

func (noSend) DialHook(next redis.DialHook) redis.DialHook { return next }
func (noSend) ProcessHook(redis.ProcessHook) redis.ProcessHook {
	return func(context.Context, redis.Cmder) error { return nil }
}
func (noSend) ProcessPipelineHook(redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(context.Context, []redis.Cmder) error { return nil }
}

// BenchmarkInvalidateArgs: what Invalidate costs the worker for a batch of 1,000 rows
// before the network: the names of their keys and the command's arguments.
func BenchmarkInvalidateArgs(b *testing.B) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer rdb.Close()
	rdb.AddHook(noSend{})
	s := New(rdb, time.Second, "bench")
	sp, err := keys.NewSpace("bench", "public.widgets", "v1")
	if err != nil {
		b.Fatal(err)
	}
	ks := make([]keys.Key, 1000)
	for i := range ks {
		ks[i] = sp.Key(strconv.Itoa(100000 + i))
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Invalidate(context.Background(), ks...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ks)), "ns/row")
}
