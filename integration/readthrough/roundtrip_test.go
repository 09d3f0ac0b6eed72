package readthrough_test

import (
	"context"
	"fmt"
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

// countedCache returns a Cache over a client of its own whose round trips rt counts;
// with control, Get's sharing is off, and with it every combined read.
func countedCache(t *testing.T, e *env, control bool) (*readthrough.Cache, *roundTrips) {
	t.Helper()
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
	return c, rt
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
	combinedAndControl(t, e, func(t *testing.T, control bool, base int64, c *readthrough.Cache, rt *roundTrips) {
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
		if atMostTwo(t, control, "a miss", n, names) {
			return
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

// TestReadOrLeaseFillFails: when a combined read (store.ReadOrLease) takes the lease
// and its load fails, Get returns the load's error after one query, as a miss whose
// shared fill fails does. The table is renamed away just before the load, so that
// every load from then on fails. The control drops the error and misses again (the
// defect), loading a second time, which the test checks it does.
func TestReadOrLeaseFillFails(t *testing.T) {
	t.Parallel()
	for _, control := range []bool{false, true} {
		name := "fixed"
		if control {
			name = "control: error dropped"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'one'), (2, 'two')`)
			repo := e.widgets(t, readthrough.ModelOptions{})
			ctx := ctxT(t)
			if _, ok, err := repo.Get(ctx, int64(1)); err != nil || !ok {
				t.Fatalf("Get(1) = %v, %v", ok, err) // a miss: the model's next read is combined
			}
			var once sync.Once
			hooks := &testhooks.Read{FillErrorsDropped: control, BeforeLoad: func(string) {
				once.Do(func() {
					e.exec(t, `ALTER TABLE widgets RENAME TO widgets_gone`)
					t.Cleanup(func() { e.exec(t, `ALTER TABLE widgets_gone RENAME TO widgets`) })
				})
			}}
			before := repo.Stats().Loads
			_, _, err := repo.Get(testhooks.WithRead(ctx, hooks), int64(2))
			loads := repo.Stats().Loads - before
			t.Logf("Get(2): %v; %d loads", err, loads)
			if err == nil {
				t.Fatal("Get(2) returned no error, with the table gone")
			}
			if control {
				if loads < 2 {
					t.Fatalf("control: Get(2) loaded %d times (else this test cannot tell the fix works)", loads)
				}
				return
			}
			if loads != 1 {
				t.Fatalf("Get(2) loaded %d times, want once", loads)
			}
		})
	}
}

// TestGetManyRoundTrips: on a single Redis, a GetMany that misses takes at most two
// round trips (the lease pipeline, which answers cached rows too, then the fills) once
// the model has missed lately, and an MGET once it hits again. The control, with the
// combined read off (Get's sharing off), takes three: MGET, leases, fills.
func TestGetManyRoundTrips(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `INSERT INTO widgets (id, name) SELECT g, 'row ' || g FROM generate_series(1, 40) g`)
	ctx := ctxT(t)
	combinedAndControl(t, e, func(t *testing.T, control bool, base int64, c *readthrough.Cache, rt *roundTrips) {
		repo, err := readthrough.Register[Widget](c, readthrough.ModelOptions{})
		if err != nil {
			t.Fatal(err)
		}
		getMany := func(ids ...int64) (int, []string) {
			t.Helper()
			args := make([]any, len(ids))
			for j, id := range ids {
				args[j] = base + id
			}
			return rt.during(func() {
				ws, err := repo.GetMany(ctx, args...)
				if err != nil || len(ws) != len(ids) {
					t.Fatalf("GetMany(%v) = %+v, %v", args, ws, err)
				}
				for j, w := range ws {
					if w.ID != base+ids[j] || w.Name != fmt.Sprintf("row %d", base+ids[j]) {
						t.Fatalf("GetMany(%v)[%d] = %+v", args, j, w)
					}
				}
			})
		}
		// The model's first misses; the server learns the scripts.
		for id := int64(1); id <= 2; id++ {
			getMany(id)
		}
		n, names := getMany(3, 4, 5, 1) // three misses and a hit
		t.Logf("a GetMany missing after misses: %d round trips %v", n, names)
		if s := repo.Stats(); s.Fills != 5 {
			t.Fatalf("stats %+v, want five fills", s)
		}
		if atMostTwo(t, control, "a GetMany that missed", n, names) {
			return
		}
		var last []string
		for range 2 * 64 {
			_, last = getMany(3, 4, 5)
		}
		if len(last) != 1 || last[0] != "mget" {
			t.Fatalf("a GetMany after many hits sent %v, want one MGET", last)
		}
	})
}

// TestLookupRoundTrips: on a single Redis, a unique lookup (By) and a list lookup
// (ListBy) that miss take at most two round trips (ReadOrLease on the entry, then the
// fill script) once the model has missed lately, and their hits go back to plain GETs
// once it hits again. The control, with the combined read off (Get's sharing off),
// takes three for each miss: the entry's GET, the lease, the fill.
func TestLookupRoundTrips(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	migrate(t, e, &Member{}, &Item{})
	e.exec(t, `INSERT INTO members (id, email, name) SELECT g, 'm' || g || '@x', 'M' FROM generate_series(1, 40) g`)
	e.exec(t, `INSERT INTO items (id, order_id, name) SELECT g, g / 2, 'I' FROM generate_series(1, 80) g`)
	ctx := ctxT(t)
	combinedAndControl(t, e, func(t *testing.T, control bool, base int64, c *readthrough.Cache, rt *roundTrips) {
		ms, its := members(t, c, readthrough.ModelOptions{}), items(t, c, readthrough.ModelOptions{})
		byEmail := func(id int64) (int, []string) {
			t.Helper()
			return rt.during(func() { memberIs(ctx, t, ms, fmt.Sprintf("m%d@x", base+id), base+id) })
		}
		byOrder := func(order int64) (int, []string) {
			t.Helper()
			return rt.during(func() { listIs(ctx, t, its, base+order, 2*(base+order), 2*(base+order)+1) })
		}
		// The models' first misses; the server learns the scripts.
		for id := int64(1); id <= 2; id++ {
			byEmail(id)
			byOrder(id)
		}
		nu, namesU := byEmail(3)
		t.Logf("a unique lookup missing after misses: %d round trips %v", nu, namesU)
		nl, namesL := byOrder(3)
		t.Logf("a list lookup missing after misses: %d round trips %v", nl, namesL)
		if s := ms.Stats(); s.Unique.Misses != 3 || s.Fills != 3 {
			t.Fatalf("members' stats %+v, want three unique misses, all filled", s)
		}
		if s := its.Stats(); s.List.Misses != 3 || s.Fills != 3 {
			t.Fatalf("items' stats %+v, want three list misses, all filled", s)
		}
		unique := atMostTwo(t, control, "a unique lookup", nu, namesU)
		if atMostTwo(t, control, "a list lookup", nl, namesL) || unique {
			return
		}
		// Hits: the entry and the row through the scripts for a while, then GETs.
		var last []string
		for range 2 * 64 {
			_, last = byEmail(3)
		}
		if len(last) != 2 || last[0] != "get" || last[1] != "get" {
			t.Fatalf("a unique hit after many hits sent %v, want two GETs (the entry, the row)", last)
		}
		if s := ms.Stats(); s.Unique.Misses != 3 {
			t.Fatalf("members' stats %+v, want the hits through the combined read counted as hits", s)
		}
		// The model misses again: the first miss is a GET's, the next two round trips.
		byEmail(4)
		if n, names := byEmail(5); n > 2 {
			t.Fatalf("a second unique miss took %d round trips %v, want at most 2", n, names)
		}
	})
}

// TestLookupGetManyRoundTrips: on a single Redis, a unique lookup's GetMany whose
// values all miss takes at most two round trips (the leases, which answer cached
// entries too, then the fills) once the model has missed lately, one more when a
// cached entry names a row (the rows' read); once the model hits again it reads the
// entries with an MGET. The control, with the combined read off (Get's sharing off),
// takes three for the misses: the entries' MGET, the leases, the fills.
func TestLookupGetManyRoundTrips(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	migrate(t, e, &Member{})
	e.exec(t, `INSERT INTO members (id, email, name) SELECT g, 'm' || g || '@x', 'M' FROM generate_series(1, 40) g`)
	ctx := ctxT(t)
	combinedAndControl(t, e, func(t *testing.T, control bool, base int64, c *readthrough.Cache, rt *roundTrips) {
		ms := members(t, c, readthrough.ModelOptions{})
		by := ms.By("Email")
		getMany := func(ids ...int64) (int, []string) {
			t.Helper()
			vals := make([]any, len(ids))
			for j, id := range ids {
				vals[j] = fmt.Sprintf("m%d@x", base+id)
			}
			return rt.during(func() {
				got, err := by.GetMany(ctx, vals...)
				if err != nil {
					t.Fatal(err)
				}
				if ids := memberIDs(got); len(ids) != len(vals) {
					t.Fatalf("GetMany(%v) = members %v", vals, ids)
				}
				for j, m := range got {
					if m.ID != base+ids[j] || m.Email != vals[j] {
						t.Fatalf("GetMany(%v)[%d] = %+v", vals, j, m)
					}
				}
			})
		}
		// The model's first misses; the server learns the scripts.
		for id := int64(1); id <= 2; id++ {
			memberIs(ctx, t, ms, fmt.Sprintf("m%d@x", base+id), base+id)
		}
		n, names := getMany(3, 4, 5, 3) // three values missing, one asked twice
		t.Logf("a GetMany of missing values after misses: %d round trips %v", n, names)
		if s := ms.Stats(); s.Unique.Misses != 6 || s.Fills != 5 {
			t.Fatalf("stats %+v, want six unique misses and five fills", s)
		}
		if atMostTwo(t, control, "a GetMany that missed", n, names) {
			return
		}
		if _, ok, err := ms.Get(ctx, base+3); err != nil || !ok { // member 3's row cached
			t.Fatalf("Get(%d) = %v, %v", base+3, ok, err)
		}
		n, names = getMany(6, 3) // a miss, and a cached entry naming a cached row
		if n > 3 {
			t.Fatalf("a GetMany of a missing and a cached value took %d round trips %v, want at most 3", n, names)
		}
		if s := ms.Stats(); s.Unique.Hits != 1 || s.Unique.Misses != 7 {
			t.Fatalf("stats %+v, want the entry the lease found counted as a hit", s)
		}
		var last []string
		for range 2 * 64 {
			_, last = getMany(3, 4, 5)
		}
		if len(last) != 2 || last[0] != "mget" || last[1] != "mget" {
			t.Fatalf("a GetMany after many hits sent %v, want two MGETs (the entries, the rows)", last)
		}
	})
}

// combinedAndControl runs test as two subtests, on a Cache of its own whose round
// trips rt counts: with the combined read ("combined"), and without it, Get's sharing
// off ("control: unshared"); each subtest has its own rows, from base + 1.
func combinedAndControl(t *testing.T, e *env, test func(t *testing.T, control bool, base int64, c *readthrough.Cache, rt *roundTrips)) {
	for i, control := range []bool{false, true} {
		name := "combined"
		if control {
			name = "control: unshared"
		}
		t.Run(name, func(t *testing.T) {
			c, rt := countedCache(t, e, control)
			test(t, control, int64(20*i), c, rt)
		})
	}
}

// atMostTwo fails the test when what, which missed, took more than two round trips
// (n, the commands names) with the combined read, or at most two without it (the
// control: else the test could not tell the combined read works). It reports whether
// the subtest is the control, which ends there.
func atMostTwo(t *testing.T, control bool, what string, n int, names []string) bool {
	t.Helper()
	if control {
		if n <= 2 {
			t.Fatalf("control: %s took %d round trips %v (else this test cannot tell the combined read works)", what, n, names)
		}
		return true
	}
	if n > 2 {
		t.Fatalf("%s took %d round trips %v, want at most 2", what, n, names)
	}
	return false
}
