package readthrough_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
)

// roundTrips is a go-redis hook counting round trips: a command, or a pipeline.
type roundTrips struct {
	mu    sync.Mutex
	n     int
	names []string
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.add(cmd.Name())
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.add("pipeline")
		return next(ctx, cmds)
	}
}

func (h *roundTrips) add(name string) {
	if name == "hello" || name == "client" {
		return // a new connection's handshake, not the read's
	}
	h.mu.Lock()
	h.n++
	h.names = append(h.names, name)
	h.mu.Unlock()
}

// during returns the round trips f makes, and the commands (or "pipeline").
func (h *roundTrips) during(f func()) (int, []string) {
	h.mu.Lock()
	h.n, h.names = 0, nil
	h.mu.Unlock()
	f()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n, h.names
}

// TestMissRoundTrips: on a single Redis a miss that fills takes at most two round trips
// (ReadOrLease, then the fill script) once the model has missed lately, and hits stay
// plain GETs once it hits again. A model's first miss after hits takes three (GET,
// the lease pipeline, the fill). The control, with Get's sharing off (and with it the
// combined read), takes three for every miss.
func TestMissRoundTrips(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name) SELECT g, 'row ' || g FROM generate_series(1, 40) g`)
	ctx := ctxT(t)
	for i, control := range []bool{false, true} {
		name := "combined"
		if control {
			name = "control: unshared"
		}
		t.Run(name, func(t *testing.T) {
			base := int64(20 * i)
			o := *e.rdb.(*redis.Client).Options()
			rdb := redis.NewClient(&o)
			t.Cleanup(func() { rdb.Close() })
			rt := &roundTrips{}
			rdb.AddHook(rt)
			db := e.db
			if control {
				db = db.WithContext(testhooks.WithRead(context.Background(), &testhooks.Read{Unshared: true}))
			}
			c, err := readthrough.New(db, rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			repo, err := readthrough.Register[Widget](c, readthrough.ModelOptions{})
			if err != nil {
				t.Fatal(err)
			}
			get := func(id int64) (int, []string) {
				t.Helper()
				return rt.during(func() {
					if w, ok, err := repo.Get(ctx, base+id); err != nil || !ok || w.ID != base+id {
						t.Fatalf("Get(%d) = %+v, %v, %v", base+id, w, ok, err)
					}
				})
			}
			// The model's first misses; the server learns the scripts.
			for id := int64(1); id <= 2; id++ {
				n, names := get(id)
				t.Logf("miss %d: %d round trips %v", id, n, names)
			}
			n, names := get(3)
			t.Logf("a miss after misses: %d round trips %v", n, names)
			if s := repo.Stats(); s.Misses != 3 || s.Fills != 3 {
				t.Fatalf("stats %+v, want three misses, all filled", s)
			}
			if control {
				if n <= 2 {
					t.Fatalf("control: a miss took %d round trips %v (else this test cannot tell the combined read works)", n, names)
				}
				return
			}
			if n > 2 {
				t.Fatalf("a miss took %d round trips %v, want at most 2", n, names)
			}
			// Hits: through the script for a while after the misses, then plain GETs.
			var last []string
			for range 2 * 64 {
				_, last = get(3)
			}
			if len(last) != 1 || last[0] != "get" {
				t.Fatalf("a hit after many hits sent %v, want one GET", last)
			}
			// The model misses again: the first miss is a GET's, the next two round trips.
			n, names = get(4)
			t.Logf("a miss after hits: %d round trips %v", n, names)
			n, names = get(5)
			if n > 2 {
				t.Fatalf("a second miss took %d round trips %v, want at most 2", n, names)
			}
		})
	}
}
