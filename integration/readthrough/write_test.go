package readthrough_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

// writer returns a repository of Widget with the policy, in a cache and connection
// pool of its own: another process.
func (e *env) writer(tb testing.TB, p writepolicy.Policy) *readthrough.Repository[Widget] {
	tb.Helper()
	r, err := readthrough.Register[Widget](e.cache(tb, e.openDB(tb)), readthrough.ModelOptions{WritePolicy: p})
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// cached returns the row cached under id's key: ok false when the key is absent.
func (e *env) cached(tb testing.TB, r *readthrough.Repository[Widget], id int64) (w Widget, ok bool) {
	tb.Helper()
	w, _, ok, err := r.Peek(context.Background(), id) // cached as absent: ok, zero w
	if err != nil {
		tb.Fatal(err)
	}
	return w, ok
}

// TestWritePolicies: what each policy leaves in the cache after Create, Save and
// Delete, and that reads after each write see it.
func TestWritePolicies(t *testing.T) {
	t.Parallel()
	for _, p := range []writepolicy.Policy{writepolicy.Invalidate, writepolicy.WriteThrough} {
		t.Run(p.String(), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ctx := ctxT(t)
			repo := e.widgets(t, readthrough.ModelOptions{WritePolicy: p})
			if _, ok, _ := repo.Get(ctx, int64(1)); ok { // caches "no such row"
				t.Fatal("row 1 exists before Create")
			}
			check := func(step string, want Widget, exists bool) {
				t.Helper()
				c, inCache := e.cached(t, repo, 1)
				switch {
				case p == writepolicy.Invalidate && inCache:
					t.Errorf("%s: entry %+v left in the cache", step, c)
				case p == writepolicy.WriteThrough && (!inCache || c != want):
					t.Errorf("%s: cache holds %+v (present %v), want %+v", step, c, inCache, want)
				}
				before := e.queries.Load()
				got, ok, err := repo.Get(ctx, int64(1))
				if err != nil || ok != exists || got != want {
					t.Errorf("%s: Get = %+v, %v, %v; want %+v, %v", step, got, ok, err, want, exists)
				}
				if p == writepolicy.WriteThrough && e.queries.Load() != before {
					t.Errorf("%s: the read after a write-through missed", step)
				}
			}
			w := Widget{ID: 1, Name: "created", Price: 1}
			if err := repo.Create(ctx, &w); err != nil {
				t.Fatal(err)
			}
			check("create", w, true)
			w.Name = "saved"
			if err := repo.Save(ctx, &w); err != nil {
				t.Fatal(err)
			}
			check("save", w, true)
			if err := repo.Delete(ctx, int64(1)); err != nil {
				t.Fatal(err)
			}
			check("delete", Widget{}, false)
			if err := repo.Delete(ctx, int64(1)); err != nil {
				t.Fatalf("deleting a missing row: %v", err)
			}
			auto := Widget{Name: "serial"}
			if err := repo.Save(ctx, &auto); err != nil || auto.ID == 0 {
				t.Fatalf("Save with a zero key = %v, id %d; want an insert with a serial id", err, auto.ID)
			}
			if s := repo.Stats(); s.Writes != 5 || s.Errors != 0 {
				t.Fatalf("stats %+v, want 5 writes", s)
			}
		})
	}
}

// TestConcurrentWriters: two writers of one row, in two processes, commit v1 then v2;
// their after-commit steps and a reader's fill are forced into each order. The cache
// must end with v2 (the last commit) or nothing, and a read must return v2. The naive
// control, which stores the written value after the commit as write-through caches
// often do, ends with v1 in the same interleaving, which shows the test can fail.
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	type scenario struct {
		name string
		run  func(t *testing.T, e *env, a, b, reader *readthrough.Repository[Widget])
		// writeBack: the scenario applies to write-back too, whose writes have no
		// after-commit step (they are one script on Redis).
		writeBack bool
	}
	// saveIn saves row 1 named name through r, with ctx's test hooks.
	saveIn := func(ctx context.Context, t *testing.T, r *readthrough.Repository[Widget], name string) {
		t.Helper()
		if err := r.Save(ctx, &Widget{ID: 1, Name: name}); err != nil {
			t.Error(err)
		}
	}
	save := func(t *testing.T, r *readthrough.Repository[Widget], name string) {
		t.Helper()
		saveIn(context.Background(), t, r, name)
	}
	// pauseFirst makes the first call of a hook signal reached and wait for release.
	pauseFirst := func(reached chan<- struct{}, release <-chan struct{}) func(string) {
		var once sync.Once
		return func(string) {
			once.Do(func() {
				close(reached)
				<-release
			})
		}
	}
	with := testhooks.WithRead
	scenarios := []scenario{
		{"after-commit steps in commit order", func(t *testing.T, e *env, a, b, _ *readthrough.Repository[Widget]) {
			save(t, a, "v1")
			save(t, b, "v2")
		}, true},
		{"later commit's steps first", func(t *testing.T, e *env, a, b, _ *readthrough.Repository[Widget]) {
			reached, release := make(chan struct{}), make(chan struct{})
			actx := with(context.Background(), &testhooks.Read{AfterCommit: pauseFirst(reached, release)})
			done := make(chan struct{})
			go func() { defer close(done); saveIn(actx, t, a, "v1") }()
			<-reached // v1 committed; its cache steps wait
			save(t, b, "v2")
			close(release)
			<-done
		}, false},
		{"earlier writer's fill loaded v1, later commit completes, then it stores", func(t *testing.T, e *env, a, b, _ *readthrough.Repository[Widget]) {
			reached, release := make(chan struct{}), make(chan struct{})
			actx := with(context.Background(), &testhooks.Read{AfterLoad: pauseFirst(reached, release)})
			done := make(chan struct{})
			go func() { defer close(done); saveIn(actx, t, a, "v1") }()
			select { // under write-through a's refill loads v1 and stops before storing it
			case <-reached:
			case <-done:
			}
			save(t, b, "v2")
			close(release)
			<-done
		}, false},
		{"reader's fill loaded v0, writes complete, then it stores", func(t *testing.T, e *env, a, b, reader *readthrough.Repository[Widget]) {
			reached, release := make(chan struct{}), make(chan struct{})
			rctx := with(context.Background(), &testhooks.Read{AfterLoad: pauseFirst(reached, release)})
			done := make(chan struct{})
			go func() {
				defer close(done)
				if _, _, err := reader.Get(rctx, int64(1)); err != nil {
					t.Error(err)
				}
			}()
			<-reached
			save(t, a, "v1")
			save(t, b, "v2")
			close(release)
			<-done
		}, true},
		{"reader fills between the two commits", func(t *testing.T, e *env, a, b, reader *readthrough.Repository[Widget]) {
			reached, release := make(chan struct{}), make(chan struct{})
			bctx := with(context.Background(), &testhooks.Read{AfterCommit: pauseFirst(reached, release)})
			save(t, a, "v1")
			done := make(chan struct{})
			go func() { defer close(done); saveIn(bctx, t, b, "v2") }()
			<-reached // v2 committed, not yet invalidated: a read may serve v1 now
			if _, _, err := reader.Get(context.Background(), int64(1)); err != nil {
				t.Error(err)
			}
			close(release)
			<-done
		}, false},
	}
	for _, p := range []writepolicy.Policy{writepolicy.Invalidate, writepolicy.WriteThrough, writepolicy.WriteBack} {
		for _, sc := range scenarios {
			if p == writepolicy.WriteBack && !sc.writeBack {
				continue
			}
			t.Run(p.String()+"/"+sc.name, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				e.exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'v0')`)
				// Readers of a write-back model register it as write-back too: its
				// entries live in keys of their own (and Postgres lacks its pending
				// writes, so reads must not fall back there).
				reader := e.widgets(t, readthrough.ModelOptions{WritePolicy: p})
				a, b := e.writer(t, p), e.writer(t, p)
				sc.run(t, e, a, b, reader)
				if c, ok := e.cached(t, reader, 1); ok && c.Name != "v2" {
					t.Fatalf("cache holds %q after v2 committed last", c.Name)
				}
				if w, _, err := reader.Get(ctxT(t), int64(1)); err != nil || w.Name != "v2" {
					t.Fatalf("Get = %+v, %v; want v2", w, err)
				}
			})
		}
	}
	t.Run("naive control", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		ctx := ctxT(t)
		reader := e.widgets(t, readthrough.ModelOptions{})
		key, _ := reader.Key(int64(1))
		// The entries of v1 and v2, as fills store them.
		e.exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'v1')`)
		v1 := e.entry(t, reader, 1)
		e.exec(t, `UPDATE widgets SET name = 'v2' WHERE id = 1`)
		if err := reader.Invalidate(ctx, int64(1)); err != nil {
			t.Fatal(err)
		}
		v2 := e.entry(t, reader, 1)
		// A commits v1, B commits v2, B stores v2, then A stores v1.
		for _, b := range [][]byte{v2, v1} {
			e.rdb.Set(ctx, key, b, time.Minute)
		}
		if c, ok := e.cached(t, reader, 1); !ok || c.Name != "v1" {
			t.Fatalf("naive control: cache holds %+v; want the stale v1 (else the check above cannot fail)", c)
		}
	})
}

// TestTransactionWrites: the cache effects of writes in a transaction wait for its
// commit, and are dropped when it rolls back.
func TestTransactionWrites(t *testing.T) {
	t.Parallel()
	errRollback := errors.New("roll back")
	for _, p := range []writepolicy.Policy{writepolicy.Invalidate, writepolicy.WriteThrough} {
		for _, commit := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/commit=%v", p, commit), func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				e.exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'v0'), (2, 'v0')`)
				ctx := ctxT(t)
				repo := e.widgets(t, readthrough.ModelOptions{WritePolicy: p})
				for _, id := range []int64{1, 2} {
					if _, _, err := repo.Get(ctx, id); err != nil { // cached
						t.Fatal(err)
					}
				}
				key, _ := repo.Key(int64(1))
				cachedBefore := e.rdb.Get(ctx, key).Val()
				err := readthrough.Transaction(ctx, e.db, func(tx *readthrough.Tx) error {
					// Row 1 twice: two writes, one cache effect.
					for _, name := range []string{"v1-draft", "v1"} {
						if err := repo.In(tx).Save(ctx, &Widget{ID: 1, Name: name}); err != nil {
							return err
						}
					}
					if err := repo.In(tx).Delete(ctx, int64(2)); err != nil {
						return err
					}
					if got := e.rdb.Get(ctx, key).Val(); got != cachedBefore {
						t.Errorf("cache changed before the commit: %q", got)
					}
					if w, _, _ := repo.In(tx).Get(ctx, int64(1)); w.Name != "v1" {
						t.Errorf("read in the transaction = %+v, want its own write", w)
					}
					// A nested transaction that fails: its write and its cache effect go.
					nerr := tx.Transaction(func(tx *readthrough.Tx) error {
						if err := repo.In(tx).Save(ctx, &Widget{ID: 3, Name: "nested"}); err != nil {
							return err
						}
						return errRollback
					})
					if !errors.Is(nerr, errRollback) {
						t.Errorf("nested transaction: %v", nerr)
					}
					if !commit {
						return errRollback
					}
					return nil
				})
				if !commit {
					if !errors.Is(err, errRollback) {
						t.Fatal(err)
					}
					if got := e.rdb.Get(ctx, key).Val(); got != cachedBefore {
						t.Fatalf("after a rollback the cache holds %q, want it untouched (%q)", got, cachedBefore)
					}
					for _, id := range []int64{1, 2} {
						if w, ok, _ := repo.Get(ctx, id); !ok || w.Name != "v0" {
							t.Fatalf("after a rollback Get(%d) = %+v, %v", id, w, ok)
						}
					}
					if s := repo.Stats(); s.Invalidations != 0 || s.Writes != 0 {
						t.Fatalf("stats %+v: a rolled-back write was counted or touched the cache", s)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				c, inCache := e.cached(t, repo, 1)
				if p == writepolicy.Invalidate && inCache || p == writepolicy.WriteThrough && c.Name != "v1" {
					t.Fatalf("after the commit the cache holds %+v (present %v)", c, inCache)
				}
				if w, _, _ := repo.Get(ctx, int64(1)); w.Name != "v1" {
					t.Fatalf("after the commit Get = %+v", w)
				}
				if _, ok, _ := repo.Get(ctx, int64(2)); ok {
					t.Fatal("row 2 deleted in the transaction is still read")
				}
				if _, ok, _ := repo.Get(ctx, int64(3)); ok {
					t.Fatal("row 3 of the rolled-back nested transaction exists")
				}
				if s := repo.Stats(); s.Invalidations != 2 || s.Writes != 3 {
					t.Fatalf("stats %+v, want the three committed writes counted and their two rows invalidated", s)
				}
			})
		}
	}
}

// TestTransactionWiring: writes through WithDB(tx) are refused, since their cache
// effects could not wait for the commit; a transaction the caller manages joins
// through WrapTx and AfterCommit; write-back writes cannot join a transaction.
func TestTransactionWiring(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'v0')`)
	ctx := ctxT(t)
	repo := e.widgets(t, readthrough.ModelOptions{})
	if _, _, err := repo.Get(ctx, int64(1)); err != nil {
		t.Fatal(err)
	}
	var rtx *readthrough.Tx
	err := e.db.Transaction(func(gtx *gorm.DB) error {
		if err := repo.WithDB(gtx).Save(ctx, &Widget{ID: 1, Name: "x"}); !errors.Is(err, readthrough.ErrUntrackedTx) {
			t.Errorf("Save through WithDB(tx): %v, want ErrUntrackedTx", err)
		}
		if err := readthrough.Transaction(ctx, gtx, func(*readthrough.Tx) error { return nil }); !errors.Is(err, readthrough.ErrUntrackedTx) {
			t.Errorf("Transaction on a transaction: %v, want ErrUntrackedTx", err)
		}
		rtx = readthrough.WrapTx(gtx)
		return repo.In(rtx).Save(ctx, &Widget{ID: 1, Name: "wrapped"})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := e.cached(t, repo, 1); !ok {
		t.Fatal("the cache changed before AfterCommit")
	}
	rtx.AfterCommit(ctx)
	if _, ok := e.cached(t, repo, 1); ok {
		t.Fatal("AfterCommit did not invalidate")
	}
	if w, _, _ := repo.Get(ctx, int64(1)); w.Name != "wrapped" {
		t.Fatalf("Get = %+v", w)
	}

	back, err := readthrough.Register[Widget](e.cache(t, e.db), readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	if err != nil {
		t.Fatal(err)
	}
	err = readthrough.Transaction(ctx, e.db, func(tx *readthrough.Tx) error {
		return back.In(tx).Save(ctx, &Widget{ID: 1, Name: "back"})
	})
	if !errors.Is(err, readthrough.ErrWriteBackInTx) {
		t.Fatalf("write-back Save in a transaction: %v, want ErrWriteBackInTx", err)
	}
}

// TestWriteBackReadsPending: under write-back, readers in every process see the
// pending write (and a pending delete), also after the invalidator deleted the row's
// value key or flushed the whole table, and never the older row in Postgres. The
// flusher then applies it.
// TestWriteBackFlightJoinedAfterDelete: under write-back, Postgres lacks acknowledged
// writes until they are flushed, so a fill's load is current only as of its lease. A
// read that begins after a write-back Delete returned, and joins a fill that took its
// lease before the Delete and read Postgres after it, must not get the deleted row.
func TestWriteBackFlightJoinedAfterDelete(t *testing.T) {
	fixture.OnBoth(t, testWriteBackFlightJoinedAfterDelete)
}

func testWriteBackFlightJoinedAfterDelete(t *testing.T, top topology) {
	t.Parallel()
	e := newEnvOn(t, top)
	e.exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'v0')`)
	ctx := ctxT(t)
	// No negative caching: the Delete leaves no value key, so the second read misses.
	repo := e.widgets(t, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack, NegativeTTL: -1})
	leased, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	joined := make(chan struct{}, 8)
	rctx := testhooks.WithRead(ctx, &testhooks.Read{
		BeforeLoad: func(string) {
			once.Do(func() {
				close(leased)
				<-release
			})
		},
		Joined: func(string) { joined <- struct{}{} },
	})
	type got struct {
		w  Widget
		ok bool
	}
	get := func() <-chan got {
		out := make(chan got, 1)
		go func() {
			w, ok, err := repo.Get(rctx, int64(1))
			if err != nil {
				t.Error(err)
			}
			out <- got{w, ok}
		}()
		return out
	}

	first := get()
	wait(t, joined, "the first read to begin the fill")
	wait(t, leased, "the fill to take the lease") // and not read Postgres yet
	if err := repo.Delete(ctx, int64(1)); err != nil {
		t.Fatal(err)
	}
	second := get()                                     // begins after the Delete returned
	wait(t, joined, "the second read to join the fill") // which reads Postgres, where row 1 still is
	close(release)
	wait(t, first, "the first read") // began before the Delete: either answer is right
	if g := wait(t, second, "the second read"); g.ok {
		t.Fatalf("a read begun after a write-back Delete returned got %+v, want no row", g.w)
	}
}

// wait receives from ch, failing the test if nothing comes within a minute.
func wait[V any](t *testing.T, ch <-chan V, what string) V {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(time.Minute):
		t.Fatalf("waited a minute for %s", what)
		var zero V
		return zero
	}
}

func TestWriteBackReadsPending(t *testing.T) { fixture.OnBoth(t, testWriteBackReadsPending) }

func testWriteBackReadsPending(t *testing.T, top topology) {
	t.Parallel()
	e := newEnvOn(t, top)
	e.exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'v0'), (2, 'v0')`)
	ctx := ctxT(t)
	repo := e.widgets(t, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	other := e.writer(t, writepolicy.WriteBack) // another process
	for _, id := range []int64{1, 2} {
		if _, _, err := repo.Get(ctx, id); err != nil { // v0 cached
			t.Fatal(err)
		}
	}
	if err := repo.Save(ctx, &Widget{ID: 1, Name: "v1"}); err != nil {
		t.Fatal(err)
	}
	if err := repo.Delete(ctx, int64(2)); err != nil {
		t.Fatal(err)
	}
	if err := repo.Save(ctx, &Widget{ID: 3, Name: "new"}); err != nil {
		t.Fatal(err)
	}
	expect := func(step string) {
		t.Helper()
		for _, r := range []*readthrough.Repository[Widget]{repo, other} {
			if w, ok, err := r.Get(ctx, int64(1)); err != nil || !ok || w.Name != "v1" {
				t.Errorf("%s: Get(1) = %+v, %v, %v; want the pending v1", step, w, ok, err)
			}
			if w, ok, err := r.Get(ctx, int64(2)); err != nil || ok {
				t.Errorf("%s: Get(2) = %+v, %v, %v; want the pending delete", step, w, ok, err)
			}
			rows, err := r.GetMany(ctx, int64(1), int64(2), int64(3))
			if err != nil || len(rows) != 2 || rows[0].Name != "v1" || rows[1].Name != "new" {
				t.Errorf("%s: GetMany = %+v, %v", step, rows, err)
			}
		}
	}
	expect("cached")
	var db []Widget
	e.db.Order("id").Find(&db)
	if len(db) != 2 || db[0].Name != "v0" {
		t.Fatalf("Postgres holds %+v before any flush; write-back wrote through", db)
	}
	// The invalidator deletes value and fence keys, by row and by table pattern.
	if err := other.Invalidate(ctx, int64(1), int64(2), int64(3)); err != nil {
		t.Fatal(err)
	}
	expect("after the row keys were invalidated")
	for _, k := range e.keysOf(ctx, e.prefix+"*") {
		if k[len(k)-2:] == ":v" || k[len(k)-2:] == ":f" {
			e.rdb.Del(ctx, k)
		}
	}
	expect("after the table was flushed")

	f, err := writeback.NewFlusher(e.db, e.rdb, writeback.FlusherOptions{Prefix: e.prefix, FlushInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(runCtx) }()
	deadline := time.Now().Add(20 * time.Second)
	for n, _ := f.Backlog(ctx); n > 0; n, _ = f.Backlog(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("flusher did not drain: %+v", f.Stats())
		}
		<-time.After(5 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e.db.Order("id").Find(&db)
	if len(db) != 2 || db[0] != (Widget{ID: 1, Name: "v1"}) || db[1] != (Widget{ID: 3, Name: "new"}) {
		t.Fatalf("Postgres after the flush: %+v", db)
	}
	if err := other.Invalidate(ctx, int64(1), int64(2), int64(3)); err != nil {
		t.Fatal(err)
	}
	expect("flushed and invalidated")
}

// TestRedisDownWrites: with Redis stopped, write-through and invalidate writes commit
// to Postgres and succeed, counting the Redis error; a write-back Save fails and
// nothing is acknowledged.
func TestRedisDownWrites(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	rd, register := e.ownRedis(t, integration.RedisOptions{}, 200*time.Millisecond)
	repos := make(map[writepolicy.Policy]*readthrough.Repository[Widget])
	for _, p := range []writepolicy.Policy{writepolicy.Invalidate, writepolicy.WriteThrough, writepolicy.WriteBack} {
		repos[p] = register(readthrough.ModelOptions{WritePolicy: p})
	}
	writeAll := func(state string) {
		for id, p := range []writepolicy.Policy{writepolicy.Invalidate, writepolicy.WriteThrough} {
			w := Widget{ID: int64(id + 1), Name: state}
			if err := repos[p].Save(ctx, &w); err != nil {
				t.Fatalf("Redis %s: %s Save = %v; want success, the write committed", state, p, err)
			}
			var got Widget
			e.db.First(&got, w.ID)
			if got.Name != state {
				t.Fatalf("Redis %s: %s Save did not reach Postgres: %+v", state, p, got)
			}
			if s := repos[p].Stats(); s.Errors == 0 {
				t.Fatalf("Redis %s: %s: Redis error not counted", state, p)
			}
		}
		start := time.Now()
		err := repos[writepolicy.WriteBack].Save(ctx, &Widget{ID: 9, Name: state})
		if err == nil {
			t.Fatalf("Redis %s: write-back Save succeeded", state)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Redis %s: write-back Save took %v to fail", state, d)
		}
	}
	if err := rd.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	writeAll("paused")
	if err := rd.Unpause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rd.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	writeAll("stopped")
	// The write-back Save that timed out against the paused server may still run once
	// the server resumes (its command was sent): a Save that returns an error may or
	// may not have happened, whole. The stopped server never got it.
}

// TestWriteBackReadsRedisDown: while Redis is down, a write-back model is not read from
// Postgres, which lacks its acknowledged, unflushed writes: Get and GetMany fail with
// ErrRedisUnavailable. Models under the other policies read Postgres. Once Redis is
// back, reads return the pending write.
func TestWriteBackReadsRedisDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	rd, register := e.ownRedis(t, integration.RedisOptions{Persistence: integration.PersistAOFAlways}, 200*time.Millisecond)
	back := register(readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	plain := register(readthrough.ModelOptions{WritePolicy: writepolicy.Invalidate})
	if err := e.db.Create(&Widget{ID: 1, Name: "in postgres"}).Error; err != nil {
		t.Fatal(err)
	}
	if err := back.Save(ctx, &Widget{ID: 1, Name: "acknowledged"}); err != nil {
		t.Fatal(err)
	}
	if err := rd.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if w, ok, err := back.Get(ctx, int64(1)); !errors.Is(err, readthrough.ErrRedisUnavailable) {
		t.Fatalf("write-back Get with Redis down = %+v, %v, %v; want ErrRedisUnavailable", w, ok, err)
	}
	if ws, err := back.GetMany(ctx, int64(1), int64(2)); !errors.Is(err, readthrough.ErrRedisUnavailable) {
		t.Fatalf("write-back GetMany with Redis down = %+v, %v; want ErrRedisUnavailable", ws, err)
	}
	if w, ok, err := plain.Get(ctx, int64(1)); err != nil || !ok || w.Name != "in postgres" {
		t.Fatalf("invalidate-policy Get with Redis down = %+v, %v, %v; want the Postgres row", w, ok, err)
	}
	if err := rd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "the pending write read back", func() bool {
		w, ok, err := back.Get(ctx, int64(1))
		return err == nil && ok && w.Name == "acknowledged"
	})
}

// TestWriteBackConfig: write-back needs one Redis for its script, and bad policies
// and durability options are refused at Register.
func TestWriteBackConfig(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}, ContextTimeoutEnabled: true})
	t.Cleanup(func() { ring.Close() })
	c, err := readthrough.New(e.db, ring, readthrough.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readthrough.Register[Widget](c, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack}); !errors.Is(err, readthrough.ErrConfig) {
		t.Errorf("write-back on a Ring client: %v, want ErrConfig", err)
	}
	for name, opts := range map[string]readthrough.ModelOptions{
		"unknown policy":              {WritePolicy: writepolicy.Policy(9)},
		"negative timeout":            {WritePolicy: writepolicy.WriteBack, WriteBack: writeback.WriteOptions{WaitAOF: true, WaitAOFTimeout: -1}},
		"negative replicas":           {WritePolicy: writepolicy.WriteBack, WriteBack: writeback.WriteOptions{WaitAOFReplicas: -1}},
		"negative timeout for writes": {WritePolicy: writepolicy.WriteBack, WriteBack: writeback.WriteOptions{Timeout: -1}},
	} {
		if _, err := readthrough.Register[Widget](e.cache(t, e.db), opts); !errors.Is(err, readthrough.ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

// TestWaitAOF: with WaitAOF a write-back Save waits until Redis fsynced it to its AOF;
// on a server without WAITAOF (before Redis 7.2) the wait is skipped with one
// warning and Saves succeed. On a Cluster the wait goes to the master of each row's
// slot: Saves of rows on every master succeed, and every master ran WAITAOF.
func TestWaitAOF(t *testing.T) { fixture.OnBoth(t, testWaitAOF) }

func testWaitAOF(t *testing.T, top topology) {
	t.Parallel()
	e := newEnvOn(t, top)
	ctx := ctxT(t)
	info, err := e.rdb.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	var major, minor int
	if i := strings.Index(info, "redis_version:"); i >= 0 {
		fmt.Sscanf(info[i+len("redis_version:"):], "%d.%d", &major, &minor)
	}
	supported := major > 7 || major == 7 && minor >= 2
	if !supported && top == cluster {
		t.Skipf("Redis %d.%d has no WAITAOF: the Cluster's waits cannot be tested (the single server's test checks the warning)", major, minor)
	}
	rdb := e.rdb
	if supported { // the shared servers have no AOF: use ones that have
		if top == single {
			rdb = integration.NewRedis(t, integration.RedisOptions{Persistence: integration.PersistAOFEverySec}).Client(t)
		} else {
			rdb = integration.NewRedisClusterWith(t, integration.RedisOptions{Persistence: integration.PersistAOFEverySec}).Client(t)
		}
	}
	var logs integration.LogBuffer
	c, err := readthrough.New(e.db, rdb, readthrough.Options{Prefix: e.prefix, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := readthrough.Register[Widget](c, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack,
		WriteBack: writeback.WriteOptions{WaitAOF: true}})
	if err != nil {
		t.Fatal(err)
	}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		saveOnEveryMaster(t, cc, repo)
		return
	}
	for i := range 3 {
		if err := repo.Save(ctx, &Widget{ID: 1, Name: fmt.Sprint(i)}); err != nil {
			t.Fatalf("Save with WaitAOF on Redis %d.%d: %v", major, minor, err)
		}
	}
	if n := strings.Count(logs.String(), "does not support WAITAOF"); !supported && n != 1 {
		t.Fatalf("Redis %d.%d has no WAITAOF: %d warnings, want 1:\n%s", major, minor, n, logs.String())
	}
	if supported {
		checkWaitAOFConnection(t, rdb.(*redis.Client), repo)
	}
}

// saveOnEveryMaster saves rows through repo, whose writes wait for the AOF, until each
// of the Cluster's masters holds one, and checks that every master ran WAITAOF.
func saveOnEveryMaster(t *testing.T, cc *redis.ClusterClient, repo *readthrough.Repository[Widget]) {
	ctx := ctxT(t)
	masters := make(map[string]bool)
	for id := int64(1); len(masters) < 3; id++ {
		if id > 300 {
			t.Fatalf("300 rows fell on %d masters, want 3", len(masters))
		}
		if err := repo.Save(ctx, &Widget{ID: id, Name: "durable"}); err != nil {
			t.Fatalf("Save of row %d with WaitAOF on a Cluster: %v", id, err)
		}
		key, _ := repo.Key(id)
		node, err := cc.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		masters[node.Options().Addr] = true
	}
	err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		stats, err := node.Info(ctx, "commandstats").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(stats, "cmdstat_waitaof:calls=") {
			return fmt.Errorf("master %s ran no WAITAOF:\n%s", node.Options().Addr, stats)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkWaitAOFConnection: WAITAOF waits only for the writes of the connection it is
// sent on, so each write-back Save must send it on the connection that journaled the
// write, right after it. Concurrent Saves on a pool of connections, watched through
// MONITOR, show each connection's commands in order.
func checkWaitAOFConnection(t *testing.T, rdb *redis.Client, repo *readthrough.Repository[Widget]) {
	ctx := ctxT(t)
	// MONITOR on a connection of its own: each command the server runs comes back as
	// a line "+1700000000.123456 [0 172.17.0.1:50000] "EVALSHA" ...", where commands
	// run by scripts show "lua" for the address.
	mon, err := net.Dial("tcp", rdb.Options().Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	r := bufio.NewReader(mon)
	if _, err := mon.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "+OK\r\n" {
		t.Fatalf("MONITOR: %q, %v", line, err)
	}
	const writers, saves = 8, 3 // under appendfsync everysec each Save waits up to a second
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range saves {
				if err := repo.Save(ctx, &Widget{ID: int64(10 + w), Name: fmt.Sprint(i)}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	// A command of this connection's own marks the end of the writes in the stream.
	if err := rdb.Echo(ctx, "end of writes").Err(); err != nil {
		t.Fatal(err)
	}

	last := make(map[string]string) // connection → its previous command
	var waits int
	for {
		if err := mon.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading MONITOR: %v", err)
		}
		if strings.Contains(line, `"end of writes"`) {
			break
		}
		_, rest, ok := strings.Cut(line, "[")
		if !ok {
			continue
		}
		client, rest, _ := strings.Cut(rest, "] ")
		fields := strings.Fields(client)
		if len(fields) != 2 || fields[1] == "lua" {
			continue
		}
		addr := fields[1]
		name, _, _ := strings.Cut(strings.TrimPrefix(rest, `"`), `"`)
		name = strings.ToUpper(name)
		if name == "WAITAOF" {
			waits++
			if last[addr] != "EVALSHA" {
				t.Errorf("WAITAOF on connection %s after %q, not after the journal script on that connection", addr, last[addr])
			}
		}
		last[addr] = name
	}
	if waits != writers*saves {
		t.Errorf("MONITOR saw %d WAITAOF, want one per Save (%d)", waits, writers*saves)
	}
}
