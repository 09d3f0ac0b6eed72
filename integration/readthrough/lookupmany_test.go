package readthrough_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/readthrough"
)

// countedLookupCache returns a Cache over a pool of its own (db), whose SELECTs on
// table are counted in queries, and over a Redis client of its own whose round trips
// rt counts.
func countedLookupCache(t testing.TB, e *env, table string) (c *readthrough.Cache, db *gorm.DB, queries *atomic.Int64, rt *roundTrips) {
	t.Helper()
	db = e.openDB(t)
	queries = new(atomic.Int64)
	err := db.Callback().Query().Before("gorm:query").Register("test:count-"+table, func(tx *gorm.DB) {
		if tx.Statement.Table == table {
			queries.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	o := *e.rdb.(*redis.Client).Options()
	rdb := redis.NewClient(&o)
	t.Cleanup(func() { rdb.Close() })
	rt = &roundTrips{}
	rdb.AddHook(rt)
	c, err = readthrough.New(db, rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c, db, queries, rt
}

// oneByOne returns what By(fields).Get returns for each of vals, in order, those
// with no row left out: what GetMany must return.
func oneByOne[T any](ctx context.Context, t *testing.T, u *readthrough.UniqueLookup[T], vals ...any) []T {
	t.Helper()
	var out []T
	for _, v := range vals {
		row, ok, err := u.Get(ctx, v)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			out = append(out, row)
		}
	}
	return out
}

func memberIDs(rows []Member) []int64 { return ids(rows, func(m Member) int64 { return m.ID }) }

// TestLookupGetManyMisses: GetMany of values whose entries are not cached reads
// Postgres once for them all, whatever their number, and returns what Get returns
// value by value: the same rows, in the order asked, without the values that name no
// row (absent, soft-deleted), a value asked twice twice. The entries it fills are
// those Get fills (negative ones for values with no visible row), so the next reads
// hit. Cached values in the same call are answered from Redis; unscoped, GetMany reads
// Postgres once and caches nothing.
func TestLookupGetManyMisses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	migrate(t, e, &Member{})
	e.exec(t, `INSERT INTO members (id, email, name) SELECT g, 'm' || g || '@x', 'M' || g FROM generate_series(1, 30) g`)
	e.exec(t, `UPDATE members SET deleted_at = now() WHERE id = 7`)
	c, db, queries, rt := countedLookupCache(t, e, "members")
	r := members(t, c, readthrough.ModelOptions{})
	by := r.By("Email")
	ctx := ctxT(t)
	vals := []any{"m5@x", "nobody@x", "m1@x", "m7@x", "m12@x", "m5@x", "m30@x", "none@x", "m2@x"}
	cached := []any{"m1@x", "none@x"} // the mix: these entries are cached before GetMany

	want := oneByOne(ctx, t, by, vals...)
	if got := memberIDs(want); !slices.Equal(got, []int64{5, 1, 12, 5, 30, 2}) {
		t.Fatalf("Gets = %v; the test's data is not what it expects", got)
	}
	if err := by.Invalidate(ctx, vals...); err != nil {
		t.Fatal(err)
	}
	oneByOne(ctx, t, by, cached...)
	oneByOne(ctx, t, by, cached...) // the second read caches m1's row too

	before := r.Stats()
	queries.Store(0)
	var got []Member
	n, names := rt.during(func() {
		var err error
		if got, err = by.GetMany(ctx, vals...); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("GetMany of %d values, %d of them cached: %d round trips %v, %d queries", len(vals), len(cached), n, names, queries.Load())
	if !slices.Equal(got, want) {
		t.Fatalf("GetMany = %+v\nwant (Get by Get) %+v", got, want)
	}
	if q := queries.Load(); q != 1 {
		t.Fatalf("GetMany of %d missing values made %d Postgres queries, want 1", len(vals)-len(cached), q)
	}
	// MGET of the entries, MGET of the cached entry's row, the leases, the fills.
	if n > 4 {
		t.Fatalf("GetMany took %d round trips %v, want at most 4", n, names)
	}
	s := r.Stats()
	// Six distinct values missed (m5@x is asked twice and filled once).
	if d := s.Unique.Misses - before.Unique.Misses; d != 7 {
		t.Fatalf("%d unique misses counted, want 7 (one per value asked that missed)", d)
	}
	if d := s.Fills - before.Fills; d != 6 {
		t.Fatalf("%d fills, want 6 (one per distinct entry)", d)
	}
	for v, want := range map[string]string{"nobody@x": "n", "m7@x": "n", "none@x": "n"} {
		key, err := by.Key(v)
		if err != nil {
			t.Fatal(err)
		}
		if entry, err := e.rdb.Get(ctx, key).Result(); err != nil || entry != want {
			t.Fatalf("entry of %s = %q, %v; want %q", v, entry, err, want)
		}
	}
	for _, v := range []string{"m5@x", "m12@x", "m30@x", "m2@x"} {
		key, err := by.Key(v)
		if err != nil {
			t.Fatal(err)
		}
		if entry, err := e.rdb.Get(ctx, key).Result(); err != nil || entry == "" || entry[0] != 'k' {
			t.Fatalf("entry of %s = %q, %v; want one naming its row", v, entry, err)
		}
	}

	// Every entry cached: GetMany reads no entry from Postgres (the rows come through
	// the primary-key path, which caches them).
	queries.Store(0)
	again, err := by.GetMany(ctx, vals...)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again, want) {
		t.Fatalf("GetMany from cached entries = %v, want %v", memberIDs(again), memberIDs(want))
	}
	if q := queries.Load(); q > 1 {
		t.Fatalf("GetMany from cached entries made %d queries, want at most one (the rows)", q)
	}

	// Unscoped: Postgres, one query, the soft-deleted row included, nothing cached.
	if err := by.Invalidate(ctx, vals...); err != nil {
		t.Fatal(err)
	}
	queries.Store(0)
	unscoped, err := r.WithDB(db.Unscoped()).By("Email").GetMany(ctx, "m7@x", "nobody@x", "m3@x")
	if err != nil {
		t.Fatal(err)
	}
	if got := memberIDs(unscoped); !slices.Equal(got, []int64{7, 3}) || !unscoped[0].DeletedAt.Valid {
		t.Fatalf("unscoped GetMany = %+v, want the soft-deleted member 7, then 3", unscoped)
	}
	if q := queries.Load(); q != 1 {
		t.Fatalf("unscoped GetMany made %d queries, want 1", q)
	}
	key, _ := by.Key("m3@x")
	if n, err := e.rdb.Exists(ctx, key).Result(); err != nil || n != 0 {
		t.Fatalf("unscoped GetMany cached an entry (%d, %v)", n, err)
	}
}

// TestLookupGetManyComposite: GetMany by a composite unique index, with values in
// every spelling Postgres accepts (uuid case, char(n) padding, numeric scale), reads
// Postgres once and returns what Get returns value by value.
func TestLookupGetManyComposite(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	migrate(t, e, &Login{})
	e.exec(t, `CREATE UNIQUE INDEX logins_handle_tenant ON logins (handle, tenant)`)
	e.exec(t, `INSERT INTO logins (id, tenant, handle, ref, code, serial) VALUES
		(1, 'acme', 'root', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'ab', 12.5),
		(2, 'acme', 'ops', 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'cd', 7),
		(3, 'zeta', 'root', 'c0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'ef', 0.01)`)
	c, _, queries, _ := countedLookupCache(t, e, "logins")
	r, err := readthrough.Register[Login](c, readthrough.ModelOptions{
		Unique: [][]string{{"Tenant", "Handle"}, {"Ref"}, {"code"}, {"Serial"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	loginIDs := func(rows []Login) []int64 { return ids(rows, func(l Login) int64 { return l.ID }) }
	for _, tc := range []struct {
		by   []string
		vals []any
		want []int64
	}{
		{[]string{"Handle", "Tenant"}, []any{[]any{"root", "zeta"}, []any{"ops", "zeta"}, []any{"ops", "acme"}, []any{"root", "acme"}}, []int64{3, 2, 1}},
		{[]string{"Ref"}, []any{"C0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "d0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}, []int64{3, 1}},
		{[]string{"Code"}, []any{"cd    ", "ab", "zz"}, []int64{2, 1}},
		{[]string{"Serial"}, []any{"0.010", "12.50", "7.00", "8"}, []int64{3, 1, 2}},
	} {
		u := r.By(tc.by...)
		want := oneByOne(ctx, t, u, tc.vals...)
		if got := loginIDs(want); !slices.Equal(got, tc.want) {
			t.Fatalf("By(%v) Gets = %v, want %v", tc.by, got, tc.want)
		}
		if err := u.Invalidate(ctx, tc.vals...); err != nil {
			t.Fatal(err)
		}
		queries.Store(0)
		got, err := u.GetMany(ctx, tc.vals...)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("By(%v).GetMany = %+v\nwant (Get by Get) %+v", tc.by, got, want)
		}
		if q := queries.Load(); q != 1 {
			t.Fatalf("By(%v).GetMany of %d missing values made %d queries, want 1", tc.by, len(tc.vals), q)
		}
	}
	if s := r.Stats().Unique; s.Stale != 0 {
		t.Fatalf("unique stats %+v: GetMany's entries are stale", s)
	}
}

// TestLookupGetManyFillRace: a write through the library lands between the load and
// the store of GetMany's fills. A row taking a value GetMany found absent invalidates
// the value's entry, which voids the lease: the fill of that entry is refused (the
// other values' are stored), and the next read sees the row. The control fills
// without leases and caches the absent value, so the next read misses the row. A row
// leaving the value it was found by is caught by the check on read instead (no write
// names the value it left); its control turns the check off and gets the row that no
// longer holds the value.
func TestLookupGetManyFillRace(t *testing.T) {
	t.Parallel()
	races := []struct {
		name string
		// write is made during the fill of the entry of value.
		write   func(ctx context.Context, r *readthrough.Repository[Member]) error
		value   string
		racing  []int64 // what the racing GetMany returns: what its fill loaded
		want    int64   // the next read of value (0: none)
		stale   int64   // the control's next read
		control testhooks.Read
		refused uint64 // fills refused in the guarded run
	}{
		{name: "value taken", value: "b@x", write: func(ctx context.Context, r *readthrough.Repository[Member]) error {
			return r.Save(ctx, &Member{ID: 2, Email: "b@x", Name: "C"})
		}, racing: []int64{1}, want: 2, stale: 0, control: testhooks.Read{Unfenced: true}, refused: 1},
		{name: "value left", value: "a@x", write: func(ctx context.Context, r *readthrough.Repository[Member]) error {
			return r.Save(ctx, &Member{ID: 1, Email: "z@x", Name: "A"})
		}, racing: []int64{1}, want: 0, stale: 1, control: testhooks.Read{Unchecked: true}},
	}
	for _, rc := range races {
		for _, guarded := range []bool{true, false} {
			name := rc.name + map[bool]string{true: "", false: " (control)"}[guarded]
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				migrate(t, e, &Member{})
				e.exec(t, `INSERT INTO members (id, email, name) VALUES (1, 'a@x', 'A'), (2, 'c@x', 'C')`)
				r := members(t, lookupCache(t, e), readthrough.ModelOptions{})
				// The writer is another process, whose writes invalidate as the
				// library's do.
				w := members(t, lookupCache(t, e), readthrough.ModelOptions{})
				ctx := ctxT(t)
				var h testhooks.Read
				if !guarded {
					h = rc.control
				}
				key, err := r.By("Email").Key(rc.value)
				if err != nil {
					t.Fatal(err)
				}
				var once sync.Once
				h.AfterLoad = func(k string) {
					if k == key {
						once.Do(func() {
							if err := rc.write(ctx, w); err != nil {
								t.Error(err)
							}
						})
					}
				}
				racing, err := r.By("Email").GetMany(testhooks.WithRead(ctx, &h), "a@x", "b@x", "nobody@x")
				if err != nil {
					t.Fatal(err)
				}
				if got := memberIDs(racing); !slices.Equal(got, rc.racing) {
					t.Fatalf("racing GetMany = %v, want %v (what its fill loaded)", got, rc.racing)
				}
				h.AfterLoad = nil
				// The next read, through GetMany too: a hit, or a miss if the entry
				// was not stored.
				next, err := r.By("Email").GetMany(testhooks.WithRead(ctx, &h), rc.value)
				if err != nil {
					t.Fatal(err)
				}
				var (
					m   Member
					got int64
				)
				ok := len(next) == 1
				if ok {
					m, got = next[0], next[0].ID
				}
				s := r.Stats()
				t.Logf("next read of %s: %+v; stats %+v", rc.value, next, s)
				if !guarded {
					if got != rc.stale {
						t.Fatalf("control: next read of %s = member %d, want the stale %d (else this test cannot tell the guard works)", rc.value, got, rc.stale)
					}
					return
				}
				if got != rc.want || ok && m.Email != rc.value {
					t.Fatalf("after the write, read of %s = %+v, %v; want member %d", rc.value, m, ok, rc.want)
				}
				if s.FillsRefused != rc.refused || s.Fills < 2 {
					t.Fatalf("%d fills refused, %d stored; want %d refused and the other values' entries stored", s.FillsRefused, s.Fills, rc.refused)
				}
				// No entry left naming a row that does not hold the value: GetMany agrees.
				again, err := r.By("Email").GetMany(ctx, "a@x", "b@x", "nobody@x")
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range again {
					if m.Email != "a@x" && m.Email != "b@x" {
						t.Fatalf("GetMany after the write returned %+v, which holds none of the values", m)
					}
				}
			})
		}
	}
}

// TestLookupGetManyRedisDown: with Redis stopped, GetMany answers from Postgres, in
// one query for every value, as Get falls back for one; it counts the failure and
// does not wait past its Redis timeout.
func TestLookupGetManyRedisDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	migrate(t, e, &Member{})
	e.exec(t, `INSERT INTO members (id, email, name) VALUES (1, 'a@x', 'A'), (2, 'b@x', 'B')`)
	rd := integration.NewRedis(t, integration.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	db := e.openDB(t)
	var queries atomic.Int64
	err := db.Callback().Query().Before("gorm:query").Register("test:count-members", func(tx *gorm.DB) {
		if tx.Statement.Table == "members" {
			queries.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := readthrough.New(db, rdb, readthrough.Options{RedisTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := members(t, c, readthrough.ModelOptions{})
	ctx := ctxT(t)
	memberIs(ctx, t, r, "a@x", 1) // cached
	if err := rd.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	queries.Store(0)
	got, err := r.By("Email").GetMany(ctx, "b@x", "nobody@x", "a@x")
	if err != nil {
		t.Fatal(err)
	}
	if ids := memberIDs(got); !slices.Equal(ids, []int64{2, 1}) {
		t.Fatalf("GetMany with Redis down = %v, want members 2, 1", ids)
	}
	if q := queries.Load(); q != 1 {
		t.Fatalf("GetMany with Redis down made %d queries, want 1", q)
	}
	if s := r.Stats(); s.Errors == 0 {
		t.Fatalf("stats %+v: no Redis error counted", s)
	}
}

// keyRecorder is a DependencyRecorder keeping the keys it is told of.
type keyRecorder struct {
	mu           sync.Mutex
	keys         map[string]bool
	unrecordable bool
}

func (k *keyRecorder) Depend(_ context.Context, _ keys.Space, ks []keys.Key) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, key := range ks {
		k.keys[key.Value()] = true
	}
}

func (k *keyRecorder) Unrecordable(context.Context, keys.Space) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.unrecordable = true
}

// TestLookupGetManyRecorded: under a DependencyRecorder, GetMany's misses are filled
// together and their rows read through the primary-key path, which records them: the
// recorder hears of every entry and every row returned, and nothing makes the read
// unrecordable.
func TestLookupGetManyRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	migrate(t, e, &Member{})
	e.exec(t, `INSERT INTO members (id, email, name) VALUES (1, 'a@x', 'A'), (2, 'b@x', 'B')`)
	r := members(t, lookupCache(t, e), readthrough.ModelOptions{})
	rec := &keyRecorder{keys: map[string]bool{}}
	ctx := readthrough.WithDependencyRecorder(ctxT(t), rec)
	vals := []any{"b@x", "nobody@x", "a@x"}
	got, err := r.By("Email").GetMany(ctx, vals...)
	if err != nil {
		t.Fatal(err)
	}
	if ids := memberIDs(got); !slices.Equal(ids, []int64{2, 1}) {
		t.Fatalf("recorded GetMany = %v, want members 2, 1", ids)
	}
	if rec.unrecordable {
		t.Fatal("recorded GetMany of cacheable values was unrecordable")
	}
	var want []string
	for _, v := range vals {
		k, err := r.By("Email").Key(v)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, k)
	}
	for _, id := range []int64{1, 2} {
		k, err := r.Key(id)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, k)
	}
	for _, k := range want {
		if !rec.keys[k] {
			t.Fatalf("recorder was not told of %s (told %v)", k, rec.keys)
		}
	}
	if s := r.Stats(); s.Unique.Misses != 3 || s.Fills < 3 {
		t.Fatalf("stats %+v, want three unique misses filled", s)
	}
}

// TestLookupGetManyCancelled: a caller giving up while GetMany's query runs gets its
// context's error, no Redis failure is counted, and the leases are given back: the
// next GetMany of the values fills them at once, waiting for no one's lease.
func TestLookupGetManyCancelled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	migrate(t, e, &Member{})
	e.exec(t, `INSERT INTO members (id, email, name) VALUES (1, 'a@x', 'A'), (2, 'b@x', 'B')`)
	r := members(t, lookupCache(t, e), readthrough.ModelOptions{FenceDuration: time.Minute})
	ctx := ctxT(t)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hctx := testhooks.WithRead(cctx, &testhooks.Read{BeforeLoad: func(string) { cancel() }})
	if _, err := r.By("Email").GetMany(hctx, "a@x", "b@x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("GetMany cancelled during its query: %v, want context.Canceled", err)
	}
	// A lease left behind would make these reads wait for it (StampedeWaits).
	got, err := r.By("Email").GetMany(ctx, "a@x", "b@x")
	if err != nil {
		t.Fatal(err)
	}
	if ids := memberIDs(got); !slices.Equal(ids, []int64{1, 2}) {
		t.Fatalf("GetMany after a cancelled one = %v, want members 1, 2", ids)
	}
	if s := r.Stats(); s.Errors != 0 || s.StampedeWaits != 0 || s.Fills != 2 {
		t.Fatalf("stats %+v, want no Redis error, no wait for a lease, both entries filled", s)
	}
}

// TestLookupGetManyInTransaction: inside a transaction GetMany by a unique lookup
// reads Postgres, so it sees the transaction's own uncommitted write and not the
// entries cached before it, and caches nothing (promise 4); after a rollback the
// cached entries still answer as Postgres does.
func TestLookupGetManyInTransaction(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	migrate(t, e, &Member{})
	e.exec(t, `INSERT INTO members (id, email, name) VALUES (1, 'a@x', 'A'), (2, 'b@x', 'B')`)
	r := members(t, lookupCache(t, e), readthrough.ModelOptions{})
	ctx := ctxT(t)
	if got, err := r.By("Email").GetMany(ctx, "a@x", "b@x"); err != nil || len(got) != 2 {
		t.Fatalf("warm-up GetMany = %+v, %v", got, err)
	}
	rollback := errors.New("test: roll back")
	err := readthrough.Transaction(ctx, e.db, func(tx *readthrough.Tx) error {
		in := r.In(tx)
		if err := in.Save(ctx, &Member{ID: 1, Email: "z@x", Name: "A"}); err != nil {
			return err
		}
		got, err := in.By("Email").GetMany(ctx, "z@x", "a@x", "b@x")
		if err != nil {
			return err
		}
		if len(got) != 2 || got[0].ID != 1 || got[0].Email != "z@x" || got[1].ID != 2 {
			t.Errorf("GetMany in the transaction = %+v, want member 1 as z@x, then member 2 (a@x is no one's inside it)", got)
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	key, _ := r.By("Email").Key("z@x")
	if n, err := e.rdb.Exists(ctx, key).Result(); err != nil || n != 0 {
		t.Fatalf("GetMany in a transaction cached the entry of z@x (%d, %v)", n, err)
	}
	got, err := r.By("Email").GetMany(ctx, "z@x", "a@x")
	if err != nil || len(got) != 1 || got[0].ID != 1 || got[0].Email != "a@x" {
		t.Fatalf("GetMany after the rollback = %+v, %v; want member 1 as a@x only", got, err)
	}
}
