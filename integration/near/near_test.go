package near_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// TestNearTwoProcesses: a write through one process is seen by its own next read at
// once, and the other process's near tier drops the row when Redis' message arrives.
func TestNearTwoProcesses(t *testing.T) {
	for _, policy := range []writepolicy.Policy{writepolicy.Invalidate, writepolicy.WriteThrough} {
		t.Run(policy.String(), func(t *testing.T) {
			e := newEnv(t, nil)
			opts := nearOn
			opts.WritePolicy = policy
			a := register[Widget](t, e.process(t), opts)
			b := register[Widget](t, e.process(t), opts)
			inNear(t, a, 1)
			inNear(t, b, 1)

			w := get(t, a, 1)
			w.Name = "v1"
			if err := a.Save(context.Background(), &w); err != nil {
				t.Fatal(err)
			}
			if got := name(t, a, 1); got != "v1" {
				t.Fatalf("the writer's own next read got %q, want v1 at once", got)
			}
			integration.Eventually(t, "the other process to read v1", func() bool { return name(t, b, 1) == "v1" })
			inNear(t, b, 1) // and it caches the new row in process again
			if got := name(t, b, 1); got != "v1" {
				t.Fatalf("near hit %q after the write, want v1", got)
			}
		})
	}
}

// TestNearSeesRedisChanges: every change to the row's Redis entry reaches the near
// tier: the invalidator's DEL, a TTL expiry, an eviction under maxmemory, FLUSHDB.
// The row is changed in Postgres without telling the cache, so a read that still
// finds it in process returns the old name.
func TestNearSeesRedisChanges(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		own    bool // needs a Redis of its own
		change func(t *testing.T, e *env, key string)
	}{
		{"DEL", false, func(t *testing.T, e *env, key string) { e.rdb.Del(ctx, key) }},
		{"expiry", false, func(t *testing.T, e *env, key string) { e.rdb.PExpire(ctx, key, 10*time.Millisecond) }},
		{"FLUSHDB", true, func(t *testing.T, e *env, key string) {
			if err := e.rdb.FlushDB(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}},
		{"eviction", true, func(t *testing.T, e *env, key string) {
			used := memoryUsed(t, e.rdb)
			e.rdb.ConfigSet(ctx, "maxmemory-policy", "allkeys-random")
			e.rdb.ConfigSet(ctx, "maxmemory", fmt.Sprint(used+2<<20))
			t.Cleanup(func() { e.rdb.ConfigSet(ctx, "maxmemory", "0") })
			val := strings.Repeat("x", 10_000)
			for i := 0; e.rdb.Exists(ctx, key).Val() == 1; i++ {
				if i > 100_000 {
					t.Fatal("the row's key was never evicted")
				}
				e.rdb.Set(ctx, fmt.Sprintf("filler:%d", i), val, 0)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var rd *integration.Redis
			if tc.own {
				rd = integration.NewRedis(t, integration.RedisOptions{})
			}
			e := newEnv(t, rd)
			a := register[Widget](t, e.process(t), nearOn)
			inNear(t, a, 1)
			e.exec(t, `UPDATE widgets SET name = 'raw' WHERE id = 1`)
			if got := name(t, a, 1); got != "v0" {
				t.Fatalf("near hit %q before the change, want v0 (the test needs the stale row in process)", got)
			}
			key, _ := a.Key(int64(1))
			tc.change(t, e, key)
			integration.Eventually(t, "the near tier to drop the row", func() bool { return name(t, a, 1) == "raw" })
		})
	}
}

func memoryUsed(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info := rdb.Info(context.Background(), "memory").Val()
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			var n int64
			fmt.Sscan(v, &n)
			return n
		}
	}
	t.Fatal("no used_memory in INFO memory")
	return 0
}

// TestNearFillRace: a read gets the row from Redis; before it keeps the reply in
// process, another process writes the row and this process receives the invalidation.
// The read must not keep the older reply: the next read returns the new row. The
// control, without the fence, keeps it and serves the old row.
func TestNearFillRace(t *testing.T) {
	for _, unfenced := range []bool{false, true} {
		t.Run(fmt.Sprintf("unfenced=%v", unfenced), func(t *testing.T) {
			e := newEnv(t, nil)
			e.exec(t, `INSERT INTO widgets (id, name) VALUES (2, 'other')`)
			a := register[Widget](t, e.process(t), nearOn)
			b := register[Widget](t, e.process(t), nearOn)
			ctx := context.Background()
			get(t, b, 1) // cached in Redis
			inNear(t, a, 2)
			key1, _ := a.Key(int64(1))
			key2, _ := a.Key(int64(2))

			raced := false
			hooks := &testhooks.Read{NearUnfenced: unfenced, BeforeNearStore: func(key string) {
				if key != key1 || raced {
					return
				}
				raced = true
				w := Widget{ID: 1, Name: "v1"}
				if err := b.Save(ctx, &w); err != nil {
					t.Error(err)
				}
				// Row 2's DEL comes after the write's in Redis' stream: once a has dropped
				// row 2, it has received the invalidation of row 1 too.
				e.rdb.Del(ctx, key2)
				dropped(t, a, 2)
			}}
			w, _, err := a.Get(testhooks.WithRead(ctx, hooks), int64(1))
			if err != nil || !raced {
				t.Fatalf("racing read: %v (raced %v)", err, raced)
			}
			if w.Name != "v0" {
				t.Fatalf("racing read returned %q, want the v0 Redis gave it", w.Name)
			}
			got := name(t, a, 1)
			switch {
			case !unfenced && got != "v1":
				t.Fatalf("after the race a read returned %q: the near tier kept a reply older than an invalidation it had received", got)
			case unfenced && got != "v0":
				t.Fatalf("control: without the fence the near tier should have kept v0, got %q: the test cannot fail", got)
			}
		})
	}
}

// TestNearRowsAreTheCallers: mutating a returned row never changes what another read
// gets, for a model with a slice, a map and a pointer (decoded per hit) and one of
// plain values (copied by value, with fewer allocations per hit).
func TestNearRowsAreTheCallers(t *testing.T) {
	type Doc struct {
		ID    int64 `gorm:"primaryKey"`
		Title *string
		Data  []byte
		Attrs map[string]string `gorm:"serializer:json"`
	}
	e := newEnv(t, nil)
	if err := e.db.AutoMigrate(&Doc{}); err != nil {
		t.Fatal(err)
	}
	e.exec(t, `INSERT INTO docs (id, title, data, attrs) VALUES (1, 't', '\x0102', '{"k":"v"}')`)
	c := e.process(t)
	docs := register[Doc](t, c, nearOn)
	widgets := register[Widget](t, c, nearOn)
	inNear(t, docs, 1)
	inNear(t, widgets, 1)

	d := get(t, docs, 1)
	*d.Title, d.Data[0], d.Attrs["k"] = "changed", 9, "changed"
	d2 := get(t, docs, 1)
	if *d2.Title != "t" || d2.Data[0] != 1 || d2.Attrs["k"] != "v" {
		t.Fatalf("a near hit returned a row sharing memory with an earlier caller's: %q %v %v", *d2.Title, d2.Data, d2.Attrs)
	}
	w := get(t, widgets, 1)
	w.Name = "changed"
	if got := name(t, widgets, 1); got != "v0" {
		t.Fatalf("plain model: near hit %q after a caller changed its copy", got)
	}

	ctx := context.Background()
	hitsBefore := widgets.Stats().NearHits + docs.Stats().NearHits
	plain := testing.AllocsPerRun(100, func() { widgets.Get(ctx, int64(1)) })
	decoded := testing.AllocsPerRun(100, func() { docs.Get(ctx, int64(1)) })
	if n := widgets.Stats().NearHits + docs.Stats().NearHits - hitsBefore; n < 200 {
		t.Fatalf("only %d of 202 reads were near hits", n)
	}
	t.Logf("allocations per near hit: plain %v, decoded %v", plain, decoded)
	if plain >= decoded {
		t.Errorf("a plain model's near hit allocates %v, no fewer than a decoded one's %v: is it decoded?", plain, decoded)
	}
}

// TestNearRefused: write-back with a near cache, and both bounds, are refused.
func TestNearRefused(t *testing.T) {
	e := newEnv(t, nil)
	c := e.process(t)
	for _, opts := range []readthrough.ModelOptions{
		{WritePolicy: writepolicy.WriteBack, Near: readthrough.NearOptions{MaxEntries: 10}},
		{Near: readthrough.NearOptions{MaxEntries: 10, MaxBytes: 10}},
		{Near: readthrough.NearOptions{MaxEntries: -1}},
	} {
		if _, err := readthrough.Register[Widget](c, opts); !errors.Is(err, readthrough.ErrConfig) {
			t.Errorf("Register(%+v) = %v, want ErrConfig", opts.Near, err)
		}
	}
}
