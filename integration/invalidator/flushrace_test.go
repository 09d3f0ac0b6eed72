package invalidator_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/readthrough"
)

// The tests of this file force the interleaving that made whole-table invalidation
// lose fills (issue 11, item 7; contract item 21): a reader's fill takes its lease and
// loads the row, the table is truncated (or its changes are lost in a gap), the flush
// begins, and the fill stores the old row while the flush walks. A walk over the
// keyspace (SCAN) misses that row: its lease, which existed when the walk began, is
// gone when the walk reaches it, and its value appears behind the walk. Go-redis hooks
// order the steps: the fill's store waits until the flush's walk has read its last
// batch, and the walk goes on only once the fill stored.
//
// They use a Redis database of their own, so that the keyspace is small enough for SCAN
// to return it in one batch: the control then ends stale every time.
const raceDB = 9

// fillGate holds the store of one row's fill (the fill script, after the load) until
// release is closed.
type fillGate struct {
	key      string
	loaded   chan struct{} // closed when the fill is about to store
	release  chan struct{} // closed to let it store
	stored   chan struct{} // closed once the store was answered
	hold     sync.Once
	answered sync.Once
}

func newFillGate(key string) *fillGate {
	return &fillGate{key: key, loaded: make(chan struct{}), release: make(chan struct{}), stored: make(chan struct{})}
}

// isFill reports whether cmd runs the fill script on the row: EVAL or EVALSHA with two
// keys, the row's value and lease (the lease script has three, release one).
func (g *fillGate) isFill(cmd redis.Cmder) bool {
	args := cmd.Args()
	name := cmd.Name()
	return (name == "evalsha" || name == "eval") && len(args) > 4 &&
		fmt.Sprint(args[2]) == "2" && args[3] == g.key
}

func (g *fillGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *fillGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !g.isFill(cmd) {
			return next(ctx, cmd)
		}
		g.hold.Do(func() {
			close(g.loaded)
			<-g.release
		})
		err := next(ctx, cmd)
		if err == nil || !redis.HasErrorPrefix(err, "NOSCRIPT") { // else go-redis sends EVAL next
			g.answered.Do(func() { close(g.stored) })
		}
		return err
	}
}

func (g *fillGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// walkGate, once armed, lets the fill store when a flush's walk (SCAN or ZSCAN) has
// read its last batch, and waits for the store before the walk deletes that batch.
type walkGate struct {
	armed atomic.Bool
	fill  *fillGate
	fired atomic.Bool
}

func (w *walkGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (w *walkGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		sc, ok := cmd.(*redis.ScanCmd)
		if !ok || err != nil || !w.armed.Load() {
			return err
		}
		if _, cursor := sc.Val(); cursor == 0 && w.fired.CompareAndSwap(false, true) {
			close(w.fill.release)
			<-w.fill.stored
		}
		return err
	}
}

func (w *walkGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// raceEnv is a widgets table with row 1, a repository whose fill of row 1 waits at a
// fillGate, and an invalidator whose flush walk lets it go at a walkGate, both in the
// Redis database raceDB.
type raceEnv struct {
	*fixture.Table
	rdb   *redis.Client // no hook on this one
	repo  *readthrough.Repository[fixture.Widget]
	key   string
	space keys.Space
	fill  *fillGate
	walk  *walkGate
	inv   *invalidator.Invalidator
	invDB *redis.Client
	slot  string
}

func newRaceEnv(t *testing.T) *raceEnv {
	t.Helper()
	rd := servers.Redis(t)
	e := &raceEnv{Table: fixture.New(t, servers.Postgres(t).NewDatabase(t), rd, 1)}
	e.slot = "slot_" + e.PG.Name
	client := func() *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: rd.Addr(), DB: raceDB, ContextTimeoutEnabled: true})
		t.Cleanup(func() { c.Close() })
		return c
	}
	e.rdb = client()
	t.Cleanup(func() { // the keys of this test's prefix; other tests share the database
		ctx := context.Background()
		iter := e.rdb.Scan(ctx, 0, e.Prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			e.rdb.Del(ctx, iter.Val())
		}
	})
	// The repository has a client of its own, whose fill of row 1 waits at the gate.
	e.fill = newFillGate("")
	repoDB := client()
	repoDB.AddHook(e.fill)
	// Long timeouts and lease: the held fill must still hold its lease, and its store
	// must not time out, however slowly a loaded machine gets to the flush.
	cache, err := readthrough.New(e.DB, repoDB, readthrough.Options{Prefix: e.Prefix, RedisTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if e.repo, err = readthrough.Register[fixture.Widget](cache, readthrough.ModelOptions{FenceDuration: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	if e.key, err = e.repo.Key(int64(1)); err != nil {
		t.Fatal(err)
	}
	e.fill.key = e.key
	if e.space, _, err = keys.ParseKey(e.key); err != nil {
		t.Fatal(err)
	}
	e.invDB = client()
	e.walk = &walkGate{fill: e.fill}
	t.Cleanup(func() { // a test that failed before the walk lets its fill end
		if e.walk.fired.CompareAndSwap(false, true) {
			close(e.fill.release)
		}
	})
	e.invDB.AddHook(e.walk)
	if e.inv, err = invalidator.New(e.invDB, invalidator.Options{Prefix: e.Prefix, RedisTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	return e
}

// startFill reads row 1 in the background, and returns once its fill has loaded the row
// and waits to store it, with a channel that receives what the read returned.
func (e *raceEnv) startFill(t *testing.T) <-chan fixture.Widget {
	t.Helper()
	got := make(chan fixture.Widget, 1)
	go func() {
		w, _, err := e.repo.Get(context.Background(), int64(1))
		if err != nil {
			t.Errorf("Get: %v", err)
		}
		got <- w
	}()
	select {
	case <-e.fill.loaded:
	case <-time.After(time.Minute):
		t.Fatal("the fill never reached its store")
	}
	return got
}

// cached returns row 1's entry in Redis, "" when there is none.
func (e *raceEnv) cached(t *testing.T) string {
	t.Helper()
	b, err := e.rdb.Get(context.Background(), e.key).Result()
	if err == redis.Nil {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkFilledDuringWalk fails the test unless the fill stored its row while the walk
// was under way: otherwise the test did not force the race.
func (e *raceEnv) checkFilledDuringWalk(t *testing.T, got <-chan fixture.Widget) {
	t.Helper()
	if !e.walk.fired.Load() {
		t.Fatal("the flush's walk never let the fill go")
	}
	if w := <-got; w.Name != "v0" {
		t.Fatalf("the fill read %+v, want the row as it was before", w)
	}
	if s := e.repo.Stats(); s.Fills != 1 {
		t.Fatalf("stats %+v: the fill was refused before the walk reached its row; the race was not forced", s)
	}
}

// TestTruncateRacesFill: a fill that read a row before a TRUNCATE and stores it while
// the invalidator flushes the table leaves nothing cached (contract item 21). With the
// flush that walked the keyspace the row stayed cached: TestFlushRaceControl.
func TestTruncateRacesFill(t *testing.T) {
	t.Parallel()
	e := newRaceEnv(t)
	runStream(t, e.PG.RoleURL, cdc.Options{
		Slot: e.slot, Publication: "pgcache", Tables: []string{"widgets"}, StatusInterval: 100 * time.Millisecond,
	}, e.inv) // its gap flush is over once it streams
	flushed := e.inv.Stats().TablesFlushed

	got := e.startFill(t)
	e.walk.armed.Store(true)
	e.Exec(t, `TRUNCATE widgets`)
	integration.Eventually(t, "the truncated table flushed", func() bool { return e.inv.Stats().TablesFlushed > flushed })
	e.checkFilledDuringWalk(t, got)
	if v := e.cached(t); v != "" {
		t.Fatalf("after the TRUNCATE's flush, row 1 is cached: %q", v)
	}
	if w, ok, err := e.repo.Get(context.Background(), int64(1)); err != nil || ok {
		t.Fatalf("Get after TRUNCATE = %+v, %v, %v; want no row", w, ok, err)
	}
}

// TestGapRacesFill: a fill that read a row before a change the stream missed (no slot
// yet) and stores it while the new slot's gap flush walks leaves nothing cached.
func TestGapRacesFill(t *testing.T) {
	t.Parallel()
	e := newRaceEnv(t)
	got := e.startFill(t)
	e.Exec(t, `UPDATE widgets SET name = 'changed in the gap' WHERE id = 1`)
	e.walk.armed.Store(true)
	runStream(t, e.PG.RoleURL, cdc.Options{
		Slot: e.slot, Publication: "pgcache", Tables: []string{"widgets"}, StatusInterval: 100 * time.Millisecond,
	}, e.inv) // creates the slot and flushes the table before it streams
	e.checkFilledDuringWalk(t, got)
	if v := e.cached(t); v != "" {
		t.Fatalf("after the gap flush, row 1 is cached: %q", v)
	}
	if w, _, err := e.repo.Get(context.Background(), int64(1)); err != nil || w.Name != "changed in the gap" {
		t.Fatalf("Get after the gap = %+v, %v", w, err)
	}
}

// TestFlushRaceControl forces the same interleaving on the table flush alone, after a
// TRUNCATE: the walk over the keyspace the invalidator used before (SCAN MATCH the
// table's pattern) leaves the truncated row cached; the walk over the table's index
// does not.
func TestFlushRaceControl(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name      string
		flush     func(ctx context.Context, st *store.Store, sp keys.Space) error
		wantStale bool
	}{
		{"keyspace scan", func(ctx context.Context, st *store.Store, sp keys.Space) error {
			_, err := st.DeleteMatching(ctx, sp.TablePattern())
			return err
		}, true},
		{"table index", func(ctx context.Context, st *store.Store, sp keys.Space) error {
			_, err := st.FlushTable(ctx, sp)
			return err
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newRaceEnv(t)
			got := e.startFill(t)
			e.Exec(t, `TRUNCATE widgets`)
			e.walk.armed.Store(true)
			if err := c.flush(context.Background(), store.New(e.invDB, 5*time.Second, "test"), e.space); err != nil {
				t.Fatal(err)
			}
			e.checkFilledDuringWalk(t, got)
			switch v := e.cached(t); {
			case c.wantStale && v == "":
				t.Fatal("the control left nothing cached: the test does not force the race")
			case !c.wantStale && v != "":
				t.Fatalf("after the flush, the truncated row 1 is cached: %q", v)
			}
		})
	}
}
