package readthrough_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
)

// watchGets is a go-redis hook that holds the reply of the next GET of one key sent
// alone (armed), and records the keys of the GETs sent in pipelines.
type watchGets struct {
	hold          string
	armed         atomic.Bool
	sent, release chan struct{}

	mu      sync.Mutex
	piped   map[string]int // GETs the client's pipeline hook saw
	batched map[string]int // GETs queued on the pipeliner (testhooks.Read.Batched)
}

// ctx returns ctx with a Batched hook counting in w.
func (w *watchGets) ctx(ctx context.Context) context.Context {
	return testhooks.WithRead(ctx, &testhooks.Read{Batched: func(key string) {
		w.mu.Lock()
		w.batched[key]++
		w.mu.Unlock()
	}})
}

// counts returns how many GETs were queued on the pipeliner, and how many of them
// the client's pipeline hook saw (go-redis sends a batch of one command alone).
func (w *watchGets) counts() (batched, piped int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.batched {
		batched += c
	}
	for _, c := range w.piped {
		piped += c
	}
	return batched, piped
}

func newWatchGets() *watchGets {
	return &watchGets{sent: make(chan struct{}), release: make(chan struct{}), piped: make(map[string]int), batched: make(map[string]int)}
}

func (w *watchGets) DialHook(next redis.DialHook) redis.DialHook { return next }

func (w *watchGets) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if cmd.Name() != "get" || len(args) != 2 || args[1] != w.hold || !w.armed.CompareAndSwap(true, false) {
			return next(ctx, cmd)
		}
		err := next(ctx, cmd)
		close(w.sent)
		<-w.release
		return err
	}
}

func (w *watchGets) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		w.mu.Lock()
		for _, c := range cmds {
			if args := c.Args(); c.Name() == "get" && len(args) == 2 {
				w.piped[fmt.Sprint(args[1])]++
			}
		}
		w.mu.Unlock()
		return next(ctx, cmds)
	}
}

// autoPipelineEnv returns a repository of widgets 1..rows, each cached, over a Redis
// server of the test's own whose client carries w; the model's reads send GETs (it
// hit since it last missed, so it does not read with the read-or-lease script).
func autoPipelineEnv(t *testing.T, rows int, w *watchGets, ro *redis.Options, opts readthrough.Options, hooks *testhooks.Read) (*integration.Redis, *readthrough.Repository[Widget]) {
	t.Helper()
	e := newEnv(t)
	e.exec(t, fmt.Sprintf(`INSERT INTO widgets (id, name) SELECT g, 'row ' || g FROM generate_series(1, %d) g`, rows))
	rd, rdb, _ := e.smallPool(t, ro, opts)
	rdb.AddHook(w)
	db := e.db
	if hooks != nil {
		db = db.WithContext(testhooks.WithRead(context.Background(), hooks))
	}
	c, err := readthrough.New(db, rdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	repo, err := readthrough.Register[Widget](c, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for id := range rows {
		cacheOn(t, rdb, repo, int64(id+1))
	}
	ctx := ctxT(t)
	for range 100 {
		if _, _, err := repo.Get(ctx, int64(1)); err != nil {
			t.Fatal(err)
		}
	}
	return rd, repo
}

// readRows reads widgets from..to at once and returns the first read that did not
// get its row.
func readRows(ctx context.Context, repo *readthrough.Repository[Widget], from, to int) error {
	errs := make(chan error, to-from+1)
	var wg sync.WaitGroup
	for id := from; id <= to; id++ {
		wg.Go(func() {
			w, ok, err := repo.Get(ctx, int64(id))
			if err == nil && (!ok || w.Name != fmt.Sprintf("row %d", id)) {
				err = fmt.Errorf("Get(%d) = %+v, %v: want 'row %[1]d'", id, w, ok)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// TestAutoPipeline: while one Get's GET is under way, the Gets that come meanwhile
// are queued on the client's pipeliner, to be sent together, and each gets its own
// row. Row 1's GET, sent alone, is held; eight Gets of other rows are read meanwhile:
// each must be queued on the pipeliner and answered while row 1's GET is held. The
// control, with NoAutoPipeline, sends them alone.
func TestAutoPipeline(t *testing.T) {
	t.Parallel()
	const others = 8
	for _, on := range []bool{true, false} {
		name := map[bool]string{true: "batched", false: "control NoAutoPipeline"}[on]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w := newWatchGets()
			_, repo := autoPipelineEnv(t, 1+others, w, &redis.Options{}, readthrough.Options{NoAutoPipeline: !on}, nil)
			ctx := w.ctx(ctxT(t))
			w.hold, _ = repo.Key(int64(1))
			w.armed.Store(true)
			first := make(chan error, 1)
			go func() { first <- readRows(ctx, repo, 1, 1) }()
			<-w.sent // row 1's GET went alone; its reply is held
			if err := readRows(ctx, repo, 2, 1+others); err != nil {
				t.Fatal(err)
			}
			close(w.release)
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			batched, piped := w.counts()
			t.Logf("%d of the %d GETs sent while another was under way were batched; the pipeline hook saw %d", batched, others, piped)
			if !on {
				if batched != 0 || piped != 0 {
					t.Fatalf("control: %d GETs batched, %d pipelined with batching off", batched, piped)
				}
				return
			}
			if batched != others {
				t.Fatalf("%d GETs batched, want the %d sent while row 1's was under way", batched, others)
			}
		})
	}
}

// TestAutoPipelineRedisHangs: batched reads are bounded by RedisTimeout, although
// go-redis' pipeliner ignores their contexts. With Redis paused and a client whose own
// read and write timeouts are a minute, rounds of concurrent Gets, until some were
// batched, must each get the row from Postgres once RedisTimeout passed, well before
// the test's deadline. The control waits for batched reads as the pipeliner alone
// does: a batched read is still waiting when the deadline ends it. The breaker is off,
// so every read tries Redis.
func TestAutoPipelineRedisHangs(t *testing.T) {
	t.Parallel()
	for _, bounded := range []bool{true, false} {
		name := map[bool]string{true: "bounded", false: "control unbounded"}[bounded]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w := newWatchGets()
			ro := &redis.Options{ReadTimeout: time.Minute, WriteTimeout: time.Minute}
			opts := readthrough.Options{RedisTimeout: 100 * time.Millisecond, Breaker: readthrough.BreakerOptions{Failures: -1}}
			rd, repo := autoPipelineEnv(t, 9, w, ro, opts, &testhooks.Read{UnboundedBatches: !bounded})
			if err := rd.Pause(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rd.Unpause(context.Background()) })
			ctx, cancel := context.WithTimeout(w.ctx(context.Background()), 10*time.Second)
			defer cancel()
			var err error
			for round := 0; round < 20 && err == nil; round++ {
				if err = readRows(ctx, repo, 1, 9); err == nil {
					if batched, _ := w.counts(); batched > 0 {
						break
					}
				}
			}
			batched, _ := w.counts()
			t.Logf("%d GETs batched with Redis paused; reads: %v", batched, err)
			if !bounded {
				if err == nil {
					t.Fatal("control: every read got its row although batched reads waited without RedisTimeout, so this test cannot tell")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if batched == 0 {
				t.Fatal("no GET was batched in 20 rounds of concurrent reads")
			}
		})
	}
}
