package gormcache_test

import (
	"errors"
	"sync"
	"testing"

	"gorm.io/gorm"

	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/writepolicy"
)

// name reads user id's name through db, failing the test on errors.
func name(t *testing.T, db *gorm.DB, id int64) string {
	t.Helper()
	var u User
	if err := db.First(&u, id).Error; err != nil {
		t.Fatal(err)
	}
	return u.Name
}

func cached(t *testing.T, e *env, pr *proc, id int64) bool {
	t.Helper()
	k, err := pr.users.Key(id)
	if err != nil {
		t.Fatal(err)
	}
	n, err := e.rdb.Exists(ctxT(t), k).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// TestRollbackDropsInvalidation: a transaction's writes invalidate nothing when it
// rolls back, through db.Transaction and Begin; until it commits, another process keeps
// reading the committed row.
func TestRollbackDropsInvalidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed(t)
	a, b := e.proc(t, writepolicy.Invalidate), e.proc(t, writepolicy.Invalidate)
	name(t, b.db, 1)
	errAbort := errors.New("abort")
	err := a.db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&User{ID: 1}).Update("name", "rolled back").Error; err != nil {
			return err
		}
		if got := name(t, b.db, 1); got != "ann" {
			t.Fatalf("another process read %q before the commit", got)
		}
		return errAbort
	})
	if !errors.Is(err, errAbort) {
		t.Fatal(err)
	}
	tx := a.db.Begin()
	if err := tx.Delete(&User{}, 1).Error; err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback().Error; err != nil {
		t.Fatal(err)
	}
	if !cached(t, e, b, 1) || a.plugin.Stats().Invalidated != 0 {
		t.Fatalf("after two rollbacks: cached %v, stats %+v; want the entry kept and nothing invalidated", cached(t, e, b, 1), a.plugin.Stats())
	}
	if got := name(t, b.db, 1); got != "ann" {
		t.Fatalf("after the rollbacks the other process reads %q", got)
	}
}

// TestInvalidateAfterCommit: a reader that fills the cache between a write and its
// commit (it reads the committed, older row) does not keep it: the invalidation comes
// after the commit, for GORM's own transaction around one write and for
// db.Transaction. The control invalidates when the write returns, before the commit,
// as go-gorm/caches does, and leaves the older row cached.
func TestInvalidateAfterCommit(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		control bool
		inTx    bool
	}{{"GORM's transaction", false, false}, {"db.Transaction", false, true}, {"control: before the commit", true, true}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.seed(t)
			a, b := e.proc(t, writepolicy.Invalidate), e.proc(t, writepolicy.Invalidate)
			writer := a.db
			if c.control {
				writer = e.open(t)
			}
			// Between the write and its commit, the other process misses and fills.
			between := func() {
				if c.control {
					if err := a.users.Invalidate(ctxT(t), int64(1)); err != nil {
						t.Fatal(err)
					}
				}
				if got := name(t, b.db, 1); got != "ann" {
					t.Errorf("read %q before the commit", got)
				}
			}
			if err := b.users.Invalidate(ctxT(t), int64(1)); err != nil {
				t.Fatal(err)
			}
			if c.inTx {
				err := writer.Transaction(func(tx *gorm.DB) error {
					err := tx.Model(&User{ID: 1}).Update("name", "new").Error
					between()
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
			} else {
				var once sync.Once
				err := writer.Callback().Update().Before("gorm:commit_or_rollback_transaction").Register("test:between", func(*gorm.DB) { once.Do(between) })
				if err != nil {
					t.Fatal(err)
				}
				if err := writer.Model(&User{ID: 1}).Update("name", "new").Error; err != nil {
					t.Fatal(err)
				}
			}
			got := name(t, b.db, 1)
			if !c.control && got != "new" {
				t.Fatalf("after the commit the other process reads %q: the fill made before the commit was kept", got)
			}
			if c.control && got != "ann" {
				t.Fatalf("control: read %q, want the older row kept (else this test cannot tell the order matters)", got)
			}
		})
	}
}

// TestFillRacesCommit: a reader's fill loads the row, then a writer in another process
// commits an update through GORM and the plugin invalidates, then the reader stores:
// the store is refused and the next read returns the new row. The unfenced control
// stores the old row, which then stays.
func TestFillRacesCommit(t *testing.T) {
	t.Parallel()
	for _, fenced := range []bool{true, false} {
		t.Run(map[bool]string{true: "fenced", false: "unfenced control"}[fenced], func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.seed(t)
			a, b := e.proc(t, writepolicy.Invalidate), e.proc(t, writepolicy.Invalidate)
			var once sync.Once
			ctx := testhooks.WithRead(ctxT(t), &testhooks.Read{Unfenced: !fenced, AfterLoad: func(string) {
				once.Do(func() {
					if err := a.db.Model(&User{ID: 1}).Update("name", "new").Error; err != nil {
						t.Error(err)
					}
				})
			}})
			if got := name(t, b.db.WithContext(ctx), 1); got != "ann" {
				t.Fatalf("racing read = %q, want the row loaded before the write", got)
			}
			got := name(t, b.db, 1)
			switch {
			case fenced && got != "new":
				t.Fatalf("after the write committed, read %q: the stale fill was stored", got)
			case fenced && b.users.Stats().FillsRefused != 1:
				t.Fatalf("stats %+v, want one refused fill", b.users.Stats())
			case !fenced && got != "ann":
				t.Fatalf("unfenced control read %q, want the stale row (else the test cannot fail)", got)
			}
		})
	}
}

// TestPreparedStatements: with gorm.Config.PrepareStmt the plugin's pool wraps GORM's
// prepared-statement pool, so writes are still sent with RETURNING and their rows known:
// a Where(...).Update in one process, in GORM's transaction and in db.Transaction, is
// read fresh by the other.
func TestPreparedStatements(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed(t)
	a := e.procWith(t, writepolicy.Invalidate, &gorm.Config{PrepareStmt: true})
	b := e.proc(t, writepolicy.Invalidate)
	name(t, b.db, 2)
	name(t, b.db, 5)
	if got := name(t, a.db, 2); got != "bob" {
		t.Fatalf("read through prepared statements: %q", got)
	}
	if err := a.db.Model(&User{}).Where("age > ?", 40).Update("name", "prepared").Error; err != nil {
		t.Fatal(err)
	}
	err := a.db.Transaction(func(tx *gorm.DB) error { return tx.Model(&User{ID: 5}).Update("age", 58).Error })
	if err != nil {
		t.Fatal(err)
	}
	if got := name(t, b.db, 2); got != "prepared" {
		t.Fatalf("the other process reads %q after the update", got)
	}
	var u User
	if err := b.db.First(&u, 5).Error; err != nil || u.Age != 58 || u.Name != "prepared" {
		t.Fatalf("the other process reads %+v, %v after the transaction", u, err)
	}
	if s := a.plugin.Stats(); s.Unknown != 0 || s.Served == 0 {
		t.Fatalf("writer's stats %+v: want every write's rows known, and reads served", s)
	}
}
