package readthrough_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
)

// hotReaders is how many goroutines read the hot key at once.
const hotReaders = 1000

// smallPool starts a Redis of the test's own (reached through the harness' published
// port) and returns it with a client of a small pool (4 connections), no retries and
// context deadlines honoured, and with a function registering Widget on that client.
// unshared turns the sharing of reads off (the control).
func (e *env) smallPool(tb testing.TB, ro *redis.Options, opts readthrough.Options) (*integration.Redis, *redis.Client, func(unshared bool, mo readthrough.ModelOptions) *readthrough.Repository[Widget]) {
	tb.Helper()
	rd := integration.NewRedis(tb, integration.RedisOptions{})
	ro.Addr, ro.PoolSize, ro.MaxRetries, ro.ContextTimeoutEnabled = rd.Addr(), 4, -1, true
	rdb := redis.NewClient(ro)
	tb.Cleanup(func() { rdb.Close() })
	return rd, rdb, func(unshared bool, mo readthrough.ModelOptions) *readthrough.Repository[Widget] {
		tb.Helper()
		db := e.db
		if unshared {
			db = db.WithContext(testhooks.WithRead(context.Background(), &testhooks.Read{Unshared: true}))
		}
		c, err := readthrough.New(db, rdb, opts)
		if err != nil {
			tb.Fatal(err)
		}
		repo, err := readthrough.Register[Widget](c, mo)
		if err != nil {
			tb.Fatal(err)
		}
		return repo
	}
}

// getCalls returns how many GETs Redis has run since its statistics were reset.
func getCalls(tb testing.TB, rdb *redis.Client) int {
	tb.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_get:calls="); ok {
			n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			if err != nil {
				tb.Fatal(err)
			}
			return n
		}
	}
	return 0
}

// cacheOn reads row id through repo until rdb holds its entry.
func cacheOn(tb testing.TB, rdb *redis.Client, repo *readthrough.Repository[Widget], id int64) {
	tb.Helper()
	ctx := context.Background()
	key, err := repo.Key(id)
	if err != nil {
		tb.Fatal(err)
	}
	integration.Eventually(tb, "the row to be cached by a read", func() bool {
		if _, _, err := repo.Get(ctx, id); err != nil {
			tb.Fatal(err)
		}
		return rdb.Exists(ctx, key).Val() == 1
	})
}

// readHot reads row id through repo from hotReaders goroutines released together, and
// checks every answer.
func readHot(t *testing.T, ctx context.Context, repo *readthrough.Repository[Widget], id int64, name string) {
	t.Helper()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range hotReaders {
		wg.Go(func() {
			<-start
			w, ok, err := repo.Get(ctx, id)
			if err != nil || !ok || w.Name != name {
				t.Errorf("Get(%d) = %+v, %v, %v; want %q", id, w, ok, err, name)
			}
		})
	}
	close(start)
	wg.Wait()
}

// TestHotKeySharedGet: 1000 concurrent Gets of one key in one process, through a pool
// of 4 connections, share Redis GETs (one per round of readers, not one each) and make
// one Postgres query for an uncached key and none for a cached one. The control, with
// sharing off, sends a GET per read.
func TestHotKeySharedGet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name) SELECT g, 'hot ' || g FROM generate_series(1, 4) g`)
	// A generous timeout: this test counts GETs and queries, not timeouts.
	_, rdb, register := e.smallPool(t, &redis.Options{}, readthrough.Options{RedisTimeout: 5 * time.Second})
	ctx := ctxT(t)
	for i, c := range []struct {
		name     string
		unshared bool
		cached   bool
	}{
		{"uncached", false, false},
		{"cached", false, true},
		{"uncached control", true, false},
		{"cached control", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := int64(i + 1)
			repo := register(c.unshared, readthrough.ModelOptions{})
			if c.cached {
				cacheOn(t, rdb, repo, id)
			}
			if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			e.queries.Store(0)
			readHot(t, ctx, repo, id, "hot "+strconv.Itoa(int(id)))
			gets, queries := getCalls(t, rdb), e.queries.Load()
			t.Logf("%d Gets: %d Redis GETs, %d Postgres queries, stats %+v", hotReaders, gets, queries, repo.Stats())
			wantQueries := int64(1)
			if c.cached {
				wantQueries = 0
			}
			shared := gets <= hotReaders/2
			if c.unshared {
				// As reads were before: a GET each, and on a busy machine some of them
				// wait for a connection past the pool's timeout and query Postgres.
				if !shared || queries != wantQueries {
					return
				}
				t.Fatalf("control: %d GETs and %d queries pass the test of sharing (else this test cannot tell sharing works)", gets, queries)
			}
			if queries != wantQueries || !shared {
				t.Fatalf("%d Postgres queries (want %d), %d GETs for %d concurrent Gets of one key (want them shared)", queries, wantQueries, gets, hotReaders)
			}
		})
	}
}

// TestHotKeyBusyPool: while every connection of the client's pool is taken (four
// BLPOPs hold them), 1000 concurrent Gets of a hot key wait for a connection instead of
// falling back to Postgres: none for a cached key, one (the fill) for an uncached one,
// and no Redis error counted nor breaker opened. The control, as the cache read before
// (each Get its own GET, a pool wait handled as a Redis failure), falls back to Postgres.
//
// The client's PoolTimeout is below RedisTimeout, so go-redis reports the wait as
// ErrPoolTimeout (see the README's hot-key section for why that matters).
func TestHotKeyBusyPool(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name) SELECT g, 'hot ' || g FROM generate_series(1, 4) g`)
	rd, rdb, register := e.smallPool(t, &redis.Options{PoolTimeout: 50 * time.Millisecond},
		readthrough.Options{RedisTimeout: 500 * time.Millisecond})
	pusher := rd.Client(t)
	ctx := ctxT(t)
	for i, c := range []struct {
		name     string
		unshared bool
		cached   bool
	}{
		{"uncached", false, false},
		{"cached", false, true},
		{"uncached control", true, false},
		{"cached control", true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := int64(i + 1)
			repo := register(c.unshared, readthrough.ModelOptions{WaitTimeout: 20 * time.Second})
			if c.cached {
				cacheOn(t, rdb, repo, id)
			}
			// Four BLPOPs take the pool's four connections until the list gets items.
			list := "hold:" + c.name
			var held sync.WaitGroup
			for range 4 {
				held.Go(func() {
					if err := rdb.BLPop(ctx, 0, list).Err(); err != nil {
						t.Error(err)
					}
				})
			}
			integration.Eventually(t, "four BLPOPs to block", func() bool {
				n, err := pusher.ClientList(ctx).Result()
				return err == nil && strings.Count(n, "cmd=blpop") == 4
			})
			release := func() {
				if err := pusher.RPush(ctx, list, 1, 2, 3, 4).Err(); err != nil {
					t.Fatal(err)
				}
				held.Wait()
			}
			e.queries.Store(0)
			done := make(chan struct{})
			go func() {
				defer close(done)
				readHot(t, ctx, repo, id, "hot "+strconv.Itoa(int(id)))
			}()
			if c.unshared {
				<-done // every read fell back: nothing frees the pool meanwhile
				release()
			} else {
				integration.Eventually(t, "the readers to wait for a connection", func() bool { return repo.Stats().StampedeWaits > 0 })
				release()
				<-done
			}
			queries, s := e.queries.Load(), repo.Stats()
			t.Logf("%d Gets with the pool taken: %d Postgres queries, stats %+v", hotReaders, queries, s)
			if c.unshared {
				if queries == 0 || s.Errors == 0 {
					t.Fatalf("control: %d queries, %d Redis errors; want the pool waits to fall back to Postgres (else this test cannot tell the waits are handled)", queries, s.Errors)
				}
				return
			}
			wantQueries := int64(1)
			if c.cached {
				wantQueries = 0
			}
			if queries != wantQueries || s.Errors != 0 || s.RedisSkipped != 0 {
				t.Fatalf("%d Postgres queries (want %d), %d Redis errors, %d reads past the breaker; want a pool wait to be neither",
					queries, wantQueries, s.Errors, s.RedisSkipped)
			}
		})
	}
}

// holdGet is a go-redis hook that holds the reply of the next GET of key, once armed:
// the GET has run on the server, and its reader waits until release is closed.
type holdGet struct {
	key     string
	armed   atomic.Bool
	sent    chan struct{}
	release chan struct{}
}

func (h *holdGet) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *holdGet) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *holdGet) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		read := cmd.Name() == "get" && len(args) == 2 && args[1] == h.key || // a GET
			cmd.Name() == "evalsha" && len(args) > 3 && args[3] == h.key // ReadOrLease
		if !read || !h.armed.CompareAndSwap(true, false) {
			return next(ctx, cmd)
		}
		err := next(ctx, cmd)
		close(h.sent)
		<-h.release
		return err
	}
}

// TestHotKeyJoinedAfterWrite: a Get that joins another Get's GET of its key must not
// take that GET's reply if the GET was sent before the Get began, for the caller may
// have written the row in between. Reader A's GET of the row reads the old entry and
// is held; the test then saves the row through the library (which invalidates the
// key after the commit) and, once Save returned, reads the row again (B), which joins
// A's GET under way. B must see the new row. Both with A's read a GET and a
// ReadOrLease (a model that missed lately). The control, with
// testhooks.UnorderedGets (B takes any GET under way), returns the old row to B.
func TestHotKeyJoinedAfterWrite(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name) SELECT g, 'before' FROM generate_series(1, 4) g`)
	ctx := ctxT(t)
	for i, c := range []struct {
		name      string
		unordered bool
		script    bool // A reads with ReadOrLease (the model missed lately), not a GET
	}{
		{"get", false, false},
		{"read or lease", false, true},
		{"control: unordered get", true, false},
		{"control: unordered read or lease", true, true},
	} {
		unordered := c.unordered
		t.Run(c.name, func(t *testing.T) {
			id := int64(i + 1)
			o := *e.rdb.(*redis.Client).Options()
			rdb := redis.NewClient(&o)
			t.Cleanup(func() { rdb.Close() })
			db := e.db
			if unordered {
				db = db.WithContext(testhooks.WithRead(context.Background(), &testhooks.Read{UnorderedGets: true}))
			}
			cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			repo, err := readthrough.Register[Widget](cache, readthrough.ModelOptions{})
			if err != nil {
				t.Fatal(err)
			}
			e.entry(t, repo, id) // cached: 'before'
			if !c.script {
				// Hits until the model reads with GETs again (see TestMissRoundTrips).
				for range 100 {
					if _, _, err := repo.Get(ctx, id); err != nil {
						t.Fatal(err)
					}
				}
			}
			key, _ := repo.Key(id)
			hold := &holdGet{key: key, sent: make(chan struct{}), release: make(chan struct{})}
			rdb.AddHook(hold)
			hold.armed.Store(true)

			type result struct {
				w   Widget
				ok  bool
				err error
			}
			a, b := make(chan result, 1), make(chan result, 1)
			go func() {
				w, ok, err := repo.Get(ctx, id)
				a <- result{w, ok, err}
			}()
			<-hold.sent // A's GET read 'before'; its reply is held
			if err := repo.Save(ctx, &Widget{ID: id, Name: "after"}); err != nil {
				t.Fatal(err)
			}
			var once sync.Once
			joined := make(chan struct{})
			bctx := testhooks.WithRead(ctx, &testhooks.Read{JoinedGet: func(string) { once.Do(func() { close(joined) }) }})
			go func() {
				w, ok, err := repo.Get(bctx, id)
				b <- result{w, ok, err}
			}()
			<-joined // B waits for A's GET
			close(hold.release)
			if r := <-a; r.err != nil || !r.ok {
				t.Fatalf("A: Get(%d) = %+v, %v, %v", id, r.w, r.ok, r.err)
			}
			r := <-b
			if r.err != nil || !r.ok {
				t.Fatalf("B: Get(%d) = %+v, %v, %v", id, r.w, r.ok, r.err)
			}
			t.Logf("B, begun after Save returned, read %q", r.w.Name)
			if unordered {
				if r.w.Name == "after" {
					t.Fatal("control: B read the new row though it took a GET sent before the write (else this test cannot tell the ordering works)")
				}
				return
			}
			if r.w.Name != "after" {
				t.Fatalf("B read %q after Save(%q) returned: it took a GET sent before the write", r.w.Name, "after")
			}
		})
	}
}
