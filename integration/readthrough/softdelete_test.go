package readthrough_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

// Gadget is a model with soft deletes.
type Gadget struct {
	ID        int64 `gorm:"primaryKey"`
	Name      string
	DeletedAt gorm.DeletedAt
}

// gadgets migrates the gadgets table and registers Gadget with policy p in a cache of
// its own, returning the repository in the default scope and one bound to
// db.Unscoped().
func gadgets(t *testing.T, e *env, p writepolicy.Policy) (scoped, unscoped *readthrough.Repository[Gadget], c *readthrough.Cache) {
	t.Helper()
	if err := e.db.AutoMigrate(&Gadget{}); err != nil {
		t.Fatal(err)
	}
	c = e.cache(t, e.db)
	r, err := readthrough.Register[Gadget](c, readthrough.ModelOptions{WritePolicy: p})
	if err != nil {
		t.Fatal(err)
	}
	return r, r.WithDB(e.db.Unscoped()), c
}

// uncached returns what GORM returns for row id without the cache, in the default
// scope or unscoped.
func uncached(t *testing.T, db *gorm.DB, id int64, unscoped bool) (Gadget, bool) {
	t.Helper()
	if unscoped {
		db = db.Unscoped()
	}
	var g Gadget
	err := db.First(&g, id).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return Gadget{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return g, true
}

func sameGadget(a, b Gadget) bool {
	return a.ID == b.ID && a.Name == b.Name && a.DeletedAt.Valid == b.DeletedAt.Valid && a.DeletedAt.Time.Equal(b.DeletedAt.Time)
}

// flush applies every pending write-back write through a flusher of e's prefix.
func flush(t *testing.T, e *env) {
	t.Helper()
	f, err := writeback.NewFlusher(e.db, e.rdb, writeback.FlusherOptions{Prefix: e.prefix, FlushInterval: 5 * time.Millisecond, RetryBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}()
	bg := context.Background()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if n, err := f.Backlog(bg); err == nil && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("flusher did not drain the journal: %+v", f.Stats())
		}
		<-time.After(5 * time.Millisecond)
	}
}

// TestSoftDeleteScopes: a model with gorm.DeletedAt, under every write policy, read
// through the default scope and through WithDB(db.Unscoped()) in both orders around a
// Delete. Every read, Get and GetMany, hit or miss, must equal the uncached GORM query
// of its scope: in the default scope a soft-deleted row is absent, unscoped it is
// there with its deleted_at. Under write-back the same holds while the delete is
// pending and after it is flushed, and the flush sets deleted_at rather than deleting
// the row. A Create of the deleted row's key fails as in GORM (write-back: an upsert),
// and a Save after the delete brings the row back everywhere.
func TestSoftDeleteScopes(t *testing.T) {
	t.Parallel()
	for _, p := range []writepolicy.Policy{writepolicy.Invalidate, writepolicy.WriteThrough, writepolicy.WriteBack} {
		t.Run(p.String(), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ctx := ctxT(t)
			scoped, unscoped, _ := gadgets(t, e, p)
			e.exec(t, `INSERT INTO gadgets (id, name) VALUES (1, 'one'), (2, 'two'), (3, 'three')`)
			repos := map[bool]*readthrough.Repository[Gadget]{false: scoped, true: unscoped}

			// check compares every read of rows 1-3 in both scopes with the uncached
			// query; want is the uncached answer while a write-back write is pending.
			check := func(step string, want func(id int64, unscoped bool) (Gadget, bool)) {
				t.Helper()
				for _, un := range []bool{false, true} {
					var many []any
					var wantMany []Gadget
					for id := int64(1); id <= 3; id++ {
						w, wok := want(id, un)
						for range 2 { // a miss, then a hit
							g, ok, err := repos[un].Get(ctx, id)
							if err != nil || ok != wok || ok && !sameGadget(g, w) {
								t.Errorf("%s: unscoped=%v Get(%d) = %+v, %v, %v; want %+v, %v", step, un, id, g, ok, err, w, wok)
							}
						}
						many = append(many, id)
						if wok {
							wantMany = append(wantMany, w)
						}
					}
					got, err := repos[un].GetMany(ctx, many...)
					if err != nil || len(got) != len(wantMany) {
						t.Errorf("%s: unscoped=%v GetMany = %+v, %v; want %+v", step, un, got, err, wantMany)
						continue
					}
					for i := range got {
						if !sameGadget(got[i], wantMany[i]) {
							t.Errorf("%s: unscoped=%v GetMany = %+v; want %+v", step, un, got, wantMany)
						}
					}
				}
			}
			fromDB := func(id int64, un bool) (Gadget, bool) { return uncached(t, e.db, id, un) }
			check("before", fromDB)

			// Both scopes cached every row above; each check reads a miss, then a hit.
			for _, id := range []any{int64(1), int64(2)} {
				if err := scoped.Delete(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			if p == writepolicy.WriteBack {
				// Pending: Postgres still has the rows live. The readers must see the
				// delete, with one deleted_at per row that the flush then writes.
				seen := make(map[int64]Gadget)
				for _, id := range []int64{1, 2} {
					g, ok, err := unscoped.Get(ctx, id)
					if err != nil || !ok || !g.DeletedAt.Valid {
						t.Fatalf("pending soft delete: unscoped Get(%d) = %+v, %v, %v; want the row with its deleted_at", id, g, ok, err)
					}
					seen[id] = g
				}
				check("soft delete pending", func(id int64, un bool) (Gadget, bool) {
					if g, ok := seen[id]; ok {
						return g, un
					}
					return fromDB(id, un)
				})
				flush(t, e)
				for id, g := range seen {
					if db, ok := uncached(t, e.db, id, true); !ok || !sameGadget(db, g) {
						t.Errorf("after the flush Postgres holds row %d as %+v, %v; want %+v, as readers saw it pending", id, db, ok, g)
					}
				}
				// The flusher's commit is what the invalidator sees; stand in for it.
				if err := scoped.Invalidate(ctx, int64(1), int64(2)); err != nil {
					t.Fatal(err)
				}
			}
			if _, ok := uncached(t, e.db, 1, true); !ok {
				t.Fatal("row 1 is gone from Postgres: the delete was not soft")
			}
			check("after the soft delete", fromDB)

			// Deleting again keeps the first deleted_at, as GORM's Delete does.
			first, _ := uncached(t, e.db, 1, true)
			if err := scoped.Delete(ctx, int64(1)); err != nil {
				t.Fatal(err)
			}
			if p == writepolicy.WriteBack {
				if g, ok, err := unscoped.Get(ctx, int64(1)); err != nil || !ok || !sameGadget(g, first) {
					t.Errorf("second delete pending: unscoped Get(1) = %+v, %v, %v; want %+v", g, ok, err, first)
				}
				flush(t, e)
				if err := scoped.Invalidate(ctx, int64(1)); err != nil {
					t.Fatal(err)
				}
			}
			if again, _ := uncached(t, e.db, 1, true); !sameGadget(again, first) {
				t.Errorf("a second delete moved deleted_at: %+v, was %+v", again, first)
			}
			check("after a second delete", fromDB)

			// Create of a soft-deleted row's key fails in Postgres (the row is there),
			// and changes nothing; under write-back Create is an upsert, like Save.
			// Save brings row 1 back (GORM's Save upserts, clearing deleted_at).
			if p != writepolicy.WriteBack {
				if err := scoped.Create(ctx, &Gadget{ID: 1, Name: "created"}); err == nil {
					t.Fatal("Create of a soft-deleted row's key succeeded; Postgres holds the row")
				}
				check("after a refused create", fromDB)
			}
			revive := scoped.Save
			if p == writepolicy.WriteBack {
				revive = scoped.Create
			}
			if err := revive(ctx, &Gadget{ID: 1, Name: "back"}); err != nil {
				t.Fatal(err)
			}
			if p == writepolicy.WriteBack {
				check("save pending", func(id int64, un bool) (Gadget, bool) {
					if id == 1 {
						return Gadget{ID: 1, Name: "back"}, true
					}
					return fromDB(id, un)
				})
				flush(t, e)
			}
			if g, ok := uncached(t, e.db, 1, false); !ok || g.Name != "back" {
				t.Fatalf("after Save Postgres holds %+v, %v", g, ok)
			}
			check("after the save", fromDB)
		})
	}
}

// TestSoftDeleteUnscopedFirst: the unscoped repository caches a row first, the row is
// soft-deleted by raw SQL and the change invalidated (as the worker does), then the
// scoped repository must not return it, nor the unscoped one miss it; and the other
// way round, a row cached by the scoped repository after its soft delete must still
// be found unscoped.
func TestSoftDeleteUnscopedFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	scoped, unscoped, _ := gadgets(t, e, writepolicy.Invalidate)
	e.exec(t, `INSERT INTO gadgets (id, name, deleted_at) VALUES (1, 'one', NULL), (2, 'two', now())`)
	if _, _, err := unscoped.Get(ctx, int64(2)); err != nil { // cached by the unscoped one
		t.Fatal(err)
	}
	if g, ok, err := scoped.Get(ctx, int64(2)); err != nil || ok {
		t.Errorf("scoped Get(2) after an unscoped read = %+v, %v, %v; want no row (soft-deleted)", g, ok, err)
	}
	if _, _, err := scoped.Get(ctx, int64(1)); err != nil {
		t.Fatal(err)
	}
	e.exec(t, `UPDATE gadgets SET deleted_at = now() WHERE id = 1`)
	if err := scoped.Invalidate(ctx, int64(1)); err != nil {
		t.Fatal(err)
	}
	if g, ok, err := scoped.Get(ctx, int64(1)); err != nil || ok { // cached by the scoped one
		t.Errorf("scoped Get(1) after its soft delete = %+v, %v, %v; want no row", g, ok, err)
	}
	want, _ := uncached(t, e.db, 1, true)
	if g, ok, err := unscoped.Get(ctx, int64(1)); err != nil || !ok || !sameGadget(g, want) {
		t.Errorf("unscoped Get(1) after a scoped read = %+v, %v, %v; want %+v", g, ok, err, want)
	}
	if got, err := unscoped.GetMany(ctx, int64(1), int64(2)); err != nil || len(got) != 2 {
		t.Errorf("unscoped GetMany = %+v, %v; want both rows", got, err)
	}
	if got, err := scoped.GetMany(ctx, int64(1), int64(2)); err != nil || len(got) != 0 {
		t.Errorf("scoped GetMany = %+v, %v; want none", got, err)
	}
}

// TestWriteBackSoftDeleteOverPending: a write-back Save, then a Delete before the
// flush: the soft delete supersedes the Save in the journal, so it must carry it, or
// the flush would lose the Save. Readers see the saved row deleted; Postgres ends
// with it.
func TestWriteBackSoftDeleteOverPending(t *testing.T) {
	fixture.OnBoth(t, testWriteBackSoftDeleteOverPending)
}

func testWriteBackSoftDeleteOverPending(t *testing.T, top topology) {
	t.Parallel()
	e := newEnvOn(t, top)
	ctx := ctxT(t)
	scoped, unscoped, _ := gadgets(t, e, writepolicy.WriteBack)
	e.exec(t, `INSERT INTO gadgets (id, name) VALUES (1, 'old')`)
	for id := int64(1); id <= 2; id++ { // row 1 exists in Postgres, row 2 does not
		if err := scoped.Save(ctx, &Gadget{ID: id, Name: fmt.Sprint("saved ", id)}); err != nil {
			t.Fatal(err)
		}
		if err := scoped.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	seen := make(map[int64]Gadget)
	for id := int64(1); id <= 2; id++ {
		if g, ok, err := scoped.Get(ctx, id); err != nil || ok {
			t.Errorf("scoped Get(%d) = %+v, %v, %v; want no row", id, g, ok, err)
		}
		g, ok, err := unscoped.Get(ctx, id)
		if err != nil || !ok || g.Name != fmt.Sprint("saved ", id) || !g.DeletedAt.Valid {
			t.Fatalf("unscoped Get(%d) = %+v, %v, %v; want the saved row, deleted", id, g, ok, err)
		}
		seen[id] = g
	}
	flush(t, e)
	for id, g := range seen {
		if db, ok := uncached(t, e.db, id, true); !ok || !sameGadget(db, g) {
			t.Errorf("Postgres holds row %d as %+v, %v; want %+v, as readers saw it pending", id, db, ok, g)
		}
	}
}

// TestWriteBackHardDeleteUnscoped: Delete through WithDB(db.Unscoped()) deletes the
// row, as GORM's Unscoped().Delete does, under write-back too.
func TestWriteBackHardDeleteUnscoped(t *testing.T) {
	fixture.OnBoth(t, testWriteBackHardDeleteUnscoped)
}

func testWriteBackHardDeleteUnscoped(t *testing.T, top topology) {
	t.Parallel()
	e := newEnvOn(t, top)
	ctx := ctxT(t)
	scoped, unscoped, _ := gadgets(t, e, writepolicy.WriteBack)
	e.exec(t, `INSERT INTO gadgets (id, name) VALUES (1, 'one')`)
	if err := unscoped.Delete(ctx, int64(1)); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*readthrough.Repository[Gadget]{scoped, unscoped} {
		if g, ok, err := r.Get(ctx, int64(1)); err != nil || ok {
			t.Errorf("Get(1) after an unscoped delete = %+v, %v, %v; want no row", g, ok, err)
		}
	}
	flush(t, e)
	if g, ok := uncached(t, e.db, 1, true); ok {
		t.Errorf("Postgres still holds %+v after an unscoped delete was flushed", g)
	}
}

// TestWriteBackVersionsSeePending: during a rolling deploy two builds cache a
// write-back model under different schema versions. A write pending under one
// version must not be hidden from readers of the other by a row they cached before:
// they wait for the flush (and fail with ErrOtherVersionPending when it does not come
// within WaitTimeout) rather than return the older row; after the flush both read the
// write. A write of the second version over the first's pending write is seen by both
// once flushed, and a soft delete over another version's pending write is refused.
func TestWriteBackVersionsSeePending(t *testing.T) {
	fixture.OnBoth(t, testWriteBackVersionsSeePending)
}

func testWriteBackVersionsSeePending(t *testing.T, top topology) {
	t.Parallel()
	e := newEnvOn(t, top)
	ctx := ctxT(t)
	e.exec(t, `INSERT INTO widgets (id, name) VALUES (1, 'v0'), (2, 'v0')`)
	var caches []*readthrough.Cache
	build := func(version string) *readthrough.Repository[Widget] {
		c := e.cache(t, e.openDB(t))
		caches = append(caches, c)
		r, err := readthrough.Register[Widget](c, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack,
			Version: version, WaitTimeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	older, newer := build("a"), build("b")
	for _, r := range []*readthrough.Repository[Widget]{older, newer} {
		if _, err := r.GetMany(ctx, int64(1), int64(2)); err != nil { // v0 cached by both
			t.Fatal(err)
		}
	}
	if err := older.Save(ctx, &Widget{ID: 1, Name: "a1"}); err != nil {
		t.Fatal(err)
	}
	if w, _, err := older.Get(ctx, int64(1)); err != nil || w.Name != "a1" {
		t.Fatalf("the writing version reads %+v, %v; want a1", w, err)
	}
	if w, ok, err := newer.Get(ctx, int64(1)); !errors.Is(err, readthrough.ErrOtherVersionPending) {
		t.Errorf("the other version reads %+v, %v, %v while a1 is pending; want ErrOtherVersionPending, never v0", w, ok, err)
	}
	if ws, err := newer.GetMany(ctx, int64(1), int64(2)); !errors.Is(err, readthrough.ErrOtherVersionPending) {
		t.Errorf("the other version's GetMany = %+v, %v while a1 is pending; want ErrOtherVersionPending", ws, err)
	}
	if err := newer.Delete(ctx, int64(1)); err != nil { // a hard delete: Widget has no DeletedAt
		t.Fatal(err)
	}
	for _, r := range []*readthrough.Repository[Widget]{older, newer} {
		if w, ok, err := r.Get(ctx, int64(1)); err != nil && !errors.Is(err, readthrough.ErrOtherVersionPending) || ok {
			t.Errorf("%s reads %+v, %v, %v after the newer version's delete; want no row, or the wait", r.Version(), w, ok, err)
		}
	}
	if err := older.Save(ctx, &Widget{ID: 2, Name: "a2"}); err != nil {
		t.Fatal(err)
	}
	if err := newer.Save(ctx, &Widget{ID: 2, Name: "b2"}); err != nil {
		t.Fatal(err)
	}
	if w, _, err := newer.Get(ctx, int64(2)); err != nil || w.Name != "b2" {
		t.Errorf("the newer version reads %+v, %v; want its pending b2", w, err)
	}
	flush(t, e)
	for _, r := range []*readthrough.Repository[Widget]{older, newer} {
		if w, ok, err := r.Get(ctx, int64(1)); err != nil || ok {
			t.Errorf("after the flush Get(1) = %+v, %v, %v; want no row", w, ok, err)
		}
		if w, _, err := r.Get(ctx, int64(2)); err != nil || w.Name != "b2" {
			t.Errorf("after the flush Get(2) = %+v, %v; want b2, the last write", w, err)
		}
	}

	// Soft delete over another version's pending write: refused, nothing written.
	if err := e.db.AutoMigrate(&Gadget{}); err != nil {
		t.Fatal(err)
	}
	ga, err := readthrough.Register[Gadget](caches[0], readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack, Version: "a"})
	if err != nil {
		t.Fatal(err)
	}
	gb, err := readthrough.Register[Gadget](caches[1], readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack, Version: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ga.Save(ctx, &Gadget{ID: 1, Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := gb.Delete(ctx, int64(1)); !errors.Is(err, readthrough.ErrOtherVersionPending) {
		t.Errorf("soft delete over another version's pending write: %v; want ErrOtherVersionPending", err)
	}
	if g, ok, err := ga.Get(ctx, int64(1)); err != nil || !ok || g.Name != "a" {
		t.Errorf("after the refused delete Get = %+v, %v, %v; want the pending save", g, ok, err)
	}
}

// plugDeleted stands for a soft-delete plugin's column type: it adds query clauses the
// cache does not know.
type plugDeleted int64

func (plugDeleted) QueryClauses(*schema.Field) []clause.Interface {
	return []clause.Interface{clause.Where{}}
}

// TestSoftDeleteConfig: soft-delete setups whose scope the cache cannot apply to a
// cached row are refused at Register, saying what to do; gorm.DeletedAt, plain or
// in gorm.Model, is accepted, and moves the model to keys of its own.
func TestSoftDeleteConfig(t *testing.T) {
	t.Parallel()
	type twice struct {
		ID        int64 `gorm:"primaryKey"`
		DeletedAt gorm.DeletedAt
		RemovedAt gorm.DeletedAt
	}
	type zero struct {
		ID        int64          `gorm:"primaryKey"`
		DeletedAt gorm.DeletedAt `gorm:"zeroValue:1970-01-01 00:00:00"`
	}
	type plugin struct {
		ID        int64 `gorm:"primaryKey"`
		DeletedAt plugDeleted
	}
	type embedded struct {
		gorm.Model
		Name string
	}
	db := modelDB(t) // Register reads the tables' keys from the catalog
	if err := db.AutoMigrate(&twice{}, &zero{}, &plugin{}, &embedded{}, &Gadget{}); err != nil {
		t.Fatal(err)
	}
	c, err := readthrough.New(db, e0(), readthrough.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"two fields":    registerErr[twice](c),
		"zeroValue tag": registerErr[zero](c),
		"plugin":        registerErr[plugin](c),
	} {
		if !errors.Is(err, readthrough.ErrConfig) || strings.Contains(err.Error(), "does not exist") {
			t.Errorf("%s: Register error %v, want ErrConfig about the soft delete", name, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if err := registerErr[embedded](c); err != nil {
		t.Errorf("gorm.Model refused: %v", err)
	}
	plain, err := readthrough.Register[Widget](c, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	soft, err := readthrough.Register[Gadget](c, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(soft.Version(), ".u") || strings.HasSuffix(plain.Version(), ".u") {
		t.Errorf("versions %q (soft deletes) and %q: a soft-delete model's fills read unscoped, so its keys must differ from older builds'",
			soft.Version(), plain.Version())
	}
}

func registerErr[T any](c *readthrough.Cache) error {
	_, err := readthrough.Register[T](c, readthrough.ModelOptions{})
	return err
}
