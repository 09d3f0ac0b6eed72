package readthrough_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
)

func TestMissThenHit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name, price) VALUES (1, 'sprocket', 3)`)
	repo := e.widgets(t, readthrough.ModelOptions{})
	ctx := ctxT(t)

	for i, want := range []readthrough.Stats{
		{Misses: 1, Loads: 1, Fills: 1},
		{Misses: 1, Loads: 1, Fills: 1, Hits: 1},
	} {
		w, ok, err := repo.Get(ctx, int64(1))
		if err != nil || !ok || w != (Widget{ID: 1, Name: "sprocket", Price: 3}) {
			t.Fatalf("Get #%d = %+v, %v, %v", i+1, w, ok, err)
		}
		if got := repo.Stats(); got != want {
			t.Fatalf("after Get #%d stats = %+v, want %+v", i+1, got, want)
		}
	}
	if n := e.queries.Load(); n != 1 {
		t.Fatalf("%d queries for two Gets, want 1", n)
	}
}

// TestStaleFillRace reproduces the race every unfenced cache loses: a reader misses and
// loads the old row; a writer commits and invalidates; the reader then stores the old
// row, which stays until its TTL. With fencing the store is refused; without it (the
// control) the stale row is cached, which shows the test can fail.
func TestStaleFillRace(t *testing.T) {
	t.Parallel()
	for _, fenced := range []bool{true, false} {
		name := map[bool]string{true: "fenced", false: "unfenced control"}[fenced]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.exec(t, `INSERT INTO widgets (id, name, price) VALUES (7, 'old', 1)`)
			reader := e.widgets(t, readthrough.ModelOptions{})
			writer, err := readthrough.Register[Widget](e.cache(t, e.openDB(t)), readthrough.ModelOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t)
			var once sync.Once
			rctx := testhooks.WithRead(ctx, &testhooks.Read{Unfenced: !fenced, AfterLoad: func(string) {
				once.Do(func() {
					// The reader has read 'old'. A writer commits and invalidates now.
					e.exec(t, `UPDATE widgets SET name = 'new' WHERE id = 7`)
					if err := writer.Invalidate(ctx, int64(7)); err != nil {
						t.Error(err)
					}
				})
			}})

			if w, _, err := reader.Get(rctx, int64(7)); err != nil || w.Name != "old" {
				t.Fatalf("racing Get = %+v, %v; want the row read before the write", w, err)
			}
			w, _, err := reader.Get(rctx, int64(7))
			if err != nil {
				t.Fatal(err)
			}
			if fenced {
				if w.Name != "new" {
					t.Fatalf("after the write committed and invalidated, Get = %q: the stale fill was cached", w.Name)
				}
				if s := reader.Stats(); s.FillsRefused != 1 {
					t.Fatalf("stats %+v, want one refused fill", s)
				}
			} else if w.Name != "old" {
				t.Fatalf("unfenced control: Get = %q, want the stale 'old' (else this test cannot tell fencing works)", w.Name)
			}
		})
	}
}

// TestStampede: concurrent misses of one key in two processes make one database query.
func TestStampede(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name, price) VALUES (5, 'hot', 9)`)
	a := e.widgets(t, readthrough.ModelOptions{})
	b, err := readthrough.Register[Widget](e.cache(t, e.openDB(t)), readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	// Whichever process wins the lease holds it until the other has seen it held, so
	// the misses overlap for certain.
	waitFor := func(other *readthrough.Repository[Widget]) func(string) {
		return func(string) {
			for other.Stats().StampedeWaits == 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Millisecond):
				}
			}
		}
	}
	actx := testhooks.WithRead(ctx, &testhooks.Read{AfterLoad: waitFor(b)})
	bctx := testhooks.WithRead(ctx, &testhooks.Read{AfterLoad: waitFor(a)})

	var wg sync.WaitGroup
	for i := range 100 {
		repo, ctx := a, actx
		if i%2 == 1 {
			repo, ctx = b, bctx
		}
		wg.Go(func() {
			w, ok, err := repo.Get(ctx, int64(5))
			if err != nil || !ok || w.Name != "hot" {
				t.Errorf("Get = %+v, %v, %v", w, ok, err)
			}
		})
	}
	wg.Wait()
	if n := e.queries.Load(); n != 1 {
		t.Fatalf("%d database queries for 100 concurrent misses in two processes, want 1", n)
	}
	// The losing process waited rather than query. It may wait in more than one flight:
	// a reader that began after its first flight was sent starts a flight of its own
	// (read-your-writes) and, if the winner's fill is still on its way, waits again.
	if waits := a.Stats().StampedeWaits + b.Stats().StampedeWaits; waits < 1 {
		t.Fatalf("%d stampede waits, want at least 1 (the other process's flight)", waits)
	}
}

// TestFlightJoinedAfterWrite: concurrent misses of a key in one process share one
// fill, but a read that begins after a write returned never gets the row that fill
// read before the write (read-your-writes): it waits for a fill of its own.
func TestFlightJoinedAfterWrite(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name, price) VALUES (8, 'old', 1)`)
	repo := e.widgets(t, readthrough.ModelOptions{})
	ctx := ctxT(t)
	loaded, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	joined := make(chan struct{}, 8)
	rctx := testhooks.WithRead(ctx, &testhooks.Read{
		AfterLoad: func(string) {
			once.Do(func() {
				close(loaded)
				<-release
			})
		},
		Joined: func(string) { joined <- struct{}{} },
	})
	get := func() <-chan Widget {
		out := make(chan Widget, 1)
		go func() {
			w, _, err := repo.Get(rctx, int64(8))
			if err != nil {
				t.Error(err)
			}
			out <- w
		}()
		return out
	}

	first := get()
	wait(t, joined, "the first read to begin the fill")
	wait(t, loaded, "the fill to read the row") // it has read 'old' and not stored it yet
	if err := repo.Save(ctx, &Widget{ID: 8, Name: "new", Price: 1}); err != nil {
		t.Fatal(err)
	}
	second := get()                                     // begins after Save returned
	wait(t, joined, "the second read to join the fill") // which read 'old'
	close(release)
	if w := wait(t, first, "the first read"); w.Name != "old" {
		t.Fatalf("the read that began the fill got %q, want the 'old' it read (else the test shows nothing)", w.Name)
	}
	if w := wait(t, second, "the second read"); w.Name != "new" {
		t.Fatalf("a read begun after Save returned got %q, want 'new'", w.Name)
	}
	if s := repo.Stats(); s.FillsRefused != 1 || s.Loads != 2 {
		t.Fatalf("stats %+v, want the first fill refused and a second load", s)
	}
}

// TestRedisDownSharesLoads: while Redis does not answer, concurrent reads of one key in
// a process share one Postgres query, as misses do, rather than passing the whole burst
// on to Postgres.
func TestRedisDownSharesLoads(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'one')`)
	rd, register := e.ownRedis(t, integration.RedisOptions{}, 300*time.Millisecond)
	repo := register(readthrough.ModelOptions{})
	ctx := ctxT(t)
	const readers = 50
	// The shared query waits until every reader has joined it: on a loaded machine the
	// readers' timeouts may fire further apart than a query takes.
	var joins atomic.Int64
	rctx := testhooks.WithRead(ctx, &testhooks.Read{
		Joined: func(string) { joins.Add(1) },
		BeforeLoad: func(string) {
			deadline := time.Now().Add(10 * time.Second)
			for joins.Load() < readers && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		},
	})
	if err := rd.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.Unpause(context.Background()) })
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			w, ok, err := repo.Get(rctx, int64(1))
			if err != nil || !ok || w.Name != "one" {
				t.Errorf("Get = %+v, %v, %v; want the row from Postgres", w, ok, err)
			}
		})
	}
	wg.Wait()
	// One query, or two if a reader began after the shared query took its moment.
	if n := e.queries.Load(); n > 2 {
		t.Fatalf("%d database queries for %d concurrent reads of one key with Redis paused, want 1", n, readers)
	}
	if s := repo.Stats(); s.Errors != readers {
		t.Fatalf("stats %+v, want %d Redis errors counted", s, readers)
	}
}

// TestStampedeFillerDied: a lease whose holder died makes readers wait WaitTimeout, then
// read Postgres themselves; they cache nothing, since they hold no lease.
func TestStampedeFillerDied(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name, price) VALUES (6, 'orphan', 1)`)
	repo := e.widgets(t, readthrough.ModelOptions{WaitTimeout: 100 * time.Millisecond})
	ctx := ctxT(t)
	key, _ := repo.Key(int64(6))
	fence := key[:len(key)-1] + "f"
	if err := e.rdb.Set(ctx, fence, "dead-filler", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	w, ok, err := repo.Get(ctx, int64(6))
	if err != nil || !ok || w.Name != "orphan" {
		t.Fatalf("Get = %+v, %v, %v", w, ok, err)
	}
	if s := repo.Stats(); s.StampedeWaits != 1 || s.Loads != 1 || s.Fills != 0 {
		t.Fatalf("stats %+v, want one wait, one load, no fill", s)
	}
	if n, _ := e.rdb.Exists(ctx, key).Result(); n != 0 {
		t.Fatal("a reader without the lease cached the row")
	}
}

func TestGetMany(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name, price) SELECT g, 'w' || g, g FROM generate_series(1, 100) g`)
	repo := e.widgets(t, readthrough.ModelOptions{})
	ctx := ctxT(t)
	for id := int64(1); id <= 10; id++ { // some already cached
		if _, _, err := repo.Get(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	e.queries.Store(0)

	ids := []any{int64(1000)} // no such row
	for id := int64(100); id >= 1; id-- {
		ids = append(ids, id)
	}
	for round := 1; round <= 2; round++ {
		rows, err := repo.GetMany(ctx, ids...)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 100 {
			t.Fatalf("round %d: %d rows, want 100", round, len(rows))
		}
		for i, w := range rows {
			if want := int64(100 - i); w.ID != want || w.Price != int(want) {
				t.Fatalf("round %d: rows[%d] = %+v, want id %d (order of ids)", round, i, w, want)
			}
		}
	}
	if n := e.queries.Load(); n != 1 {
		t.Fatalf("%d queries for two GetMany calls, want 1 (the misses of the first)", n)
	}
	if s := repo.Stats(); s.NegativeHits != 1 {
		t.Fatalf("stats %+v: the absent id should be a negative hit the second time", s)
	}
}

func TestNegativeCaching(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	repo := e.widgets(t, readthrough.ModelOptions{})
	ctx := ctxT(t)
	for range 2 {
		if _, ok, err := repo.Get(ctx, int64(404)); err != nil || ok {
			t.Fatalf("Get of a missing row = %v, %v", ok, err)
		}
	}
	if s := repo.Stats(); s.Loads != 1 || s.NegativeHits != 1 {
		t.Fatalf("stats %+v, want one load and one negative hit", s)
	}
	e.exec(t, `INSERT INTO widgets (id, name) VALUES (404, 'found')`)
	if err := repo.Invalidate(ctx, int64(404)); err != nil {
		t.Fatal(err)
	}
	if w, ok, err := repo.Get(ctx, int64(404)); err != nil || !ok || w.Name != "found" {
		t.Fatalf("after insert and invalidate Get = %+v, %v, %v", w, ok, err)
	}
}

func TestNegativeCachingOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	repo := e.widgets(t, readthrough.ModelOptions{NegativeTTL: -1})
	ctx := ctxT(t)
	for range 2 {
		if _, ok, err := repo.Get(ctx, int64(404)); err != nil || ok {
			t.Fatalf("Get of a missing row = %v, %v", ok, err)
		}
	}
	if s := repo.Stats(); s.Loads != 2 || s.NegativeHits != 0 {
		t.Fatalf("stats %+v, want two loads and no negative hit", s)
	}
}

// TestTransaction: reads inside a transaction see its own writes and never fill the
// cache with them; after a rollback the cache serves the committed row.
func TestTransaction(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name) VALUES (3, 'committed')`)
	repo := e.widgets(t, readthrough.ModelOptions{})
	ctx := ctxT(t)
	key, _ := repo.Key(int64(3))
	errRollback := errors.New("roll back")
	err := e.db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec(`UPDATE widgets SET name = 'uncommitted' WHERE id = 3`).Error; err != nil {
			return err
		}
		w, ok, err := repo.WithDB(tx).Get(ctx, int64(3))
		if err != nil || !ok || w.Name != "uncommitted" {
			t.Errorf("Get in the transaction = %+v, %v, %v; want its own write", w, ok, err)
		}
		rows, err := repo.WithDB(tx).GetMany(ctx, int64(3))
		if err != nil || len(rows) != 1 || rows[0].Name != "uncommitted" {
			t.Errorf("GetMany in the transaction = %+v, %v", rows, err)
		}
		if n, _ := e.rdb.Exists(ctx, key).Result(); n != 0 {
			t.Error("a read inside the transaction filled the cache")
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	if w, _, err := repo.Get(ctx, int64(3)); err != nil || w.Name != "committed" {
		t.Fatalf("after rollback Get = %+v, %v", w, err)
	}
}

// TestRedisDown: with Redis stopped or paused, reads return correct rows from Postgres,
// and count the errors instead of returning them.
func TestRedisDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'one'), (2, 'two')`)
	rd, register := e.ownRedis(t, integration.RedisOptions{}, 200*time.Millisecond)
	repo := register(readthrough.ModelOptions{})
	ctx := ctxT(t)
	if _, _, err := repo.Get(ctx, int64(1)); err != nil { // cached
		t.Fatal(err)
	}

	check := func(state string) {
		t.Helper()
		before := repo.Stats().Errors
		// The deadline is the bound: a read that hung on Redis would miss it.
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		w, ok, err := repo.Get(ctx, int64(1))
		if err != nil || !ok || w.Name != "one" {
			t.Fatalf("Redis %s: Get = %+v, %v, %v; want the row from Postgres", state, w, ok, err)
		}
		rows, err := repo.GetMany(ctx, int64(1), int64(2))
		if err != nil || len(rows) != 2 {
			t.Fatalf("Redis %s: GetMany = %+v, %v", state, rows, err)
		}
		if repo.Stats().Errors <= before {
			t.Fatalf("Redis %s: no error counted", state)
		}
	}
	if err := rd.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	check("paused")
	if err := rd.Unpause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rd.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	check("stopped")
}

func TestUndecodableEntry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name) VALUES (9, 'nine')`)
	repo := e.widgets(t, readthrough.ModelOptions{})
	ctx := ctxT(t)
	key, _ := repo.Key(int64(9))
	for _, garbage := range []string{"v{not json", "", "x"} {
		if err := e.rdb.Set(ctx, key, garbage, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		before := repo.Stats().DecodeErrors
		w, ok, err := repo.Get(ctx, int64(9))
		if err != nil || !ok || w.Name != "nine" {
			t.Fatalf("Get over %q = %+v, %v, %v", garbage, w, ok, err)
		}
		if repo.Stats().DecodeErrors != before+1 {
			t.Fatalf("decode error over %q not counted", garbage)
		}
		if got, _ := e.rdb.Get(ctx, key).Result(); got == garbage {
			t.Fatalf("undecodable entry %q left in place", garbage)
		}
	}
}

// TestWarningsRateLimitedAcrossCopies: repositories copied with WithDB share the rate
// limit of their warnings, so a copy per request cannot flood the log.
func TestWarningsRateLimitedAcrossCopies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name) VALUES (9, 'nine')`)
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	c, err := readthrough.New(e.db, e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := readthrough.Register[Widget](c, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	key, _ := repo.Key(int64(9))
	start := time.Now()
	for range 5 {
		if err := e.rdb.Set(ctx, key, "x", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := repo.WithDB(e.db).Get(ctx, int64(9)); err != nil {
			t.Fatal(err)
		}
	}
	// At most one warning a second: however slow the machine, five copies warned
	// fewer times than that allows only if they share the limit.
	allowed := int(time.Since(start)/time.Second) + 1
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "undecodable cache entry"); n > allowed || n == 0 {
		t.Errorf("%d warnings from five copies in %v, want 1 to %d:\n%s", n, time.Since(start), allowed, logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
