package gormcache_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/pgcache/pgcache/gormcache"
	"github.com/pgcache/pgcache/readthrough"
)

// Account is read by its unique email through the plugin, and listed by team.
type Account struct {
	ID    int64  `gorm:"primaryKey"`
	Email string `gorm:"uniqueIndex"`
	Team  int    `gorm:"index"`
}

func (a Account) rowID() int64 { return a.ID }

// teamRow is a model read by its unique email and listed by team: Account, and Player
// (soft-deleted).
type teamRow interface {
	Account | Player
	rowID() int64
}

// lookupProc is a process caching T through the plugin, with the lookups by email and
// by team.
type lookupProc[T teamRow] struct {
	db       *gorm.DB
	plugin   *gormcache.Plugin
	accounts *readthrough.Repository[T]
}

// accountProc is a process caching accounts.
type accountProc = lookupProc[Account]

func (e *env) accountProc(t *testing.T) *accountProc { return newLookupProc[Account](t, e) }

func newLookupProc[T teamRow](t *testing.T, e *env) *lookupProc[T] {
	t.Helper()
	db := e.open(t)
	p, err := gormcache.New(db, e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := gormcache.Register[T](p, readthrough.ModelOptions{Unique: [][]string{{"Email"}}, Lists: [][]string{{"Team"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	return &lookupProc[T]{db: db, plugin: p, accounts: repo}
}

// byEmail reads the row through the plugin; false when there is none.
func (a *lookupProc[T]) byEmail(t *testing.T, email string) (T, bool) {
	t.Helper()
	var row T
	err := a.db.Where("email = ?", email).First(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return row, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return row, true
}

// team returns the ids of team n's rows, as the list lookup by team reads them.
func (a *lookupProc[T]) team(t *testing.T, ctx context.Context, n int) []int64 {
	t.Helper()
	rows, err := a.accounts.ListBy("Team").Get(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, r := range rows {
		ids = append(ids, r.rowID())
	}
	return ids
}

// accountsEnv makes the accounts table with accounts 1 (ann@x) and 2 (bob@x) in team
// 1 and 3 (cat@x) in team 2, and two processes caching them through the plugin.
func accountsEnv(t *testing.T) (e *env, writer, reader *accountProc) {
	t.Helper()
	e = newEnv(t)
	if err := e.plain.AutoMigrate(&Account{}); err != nil {
		t.Fatal(err)
	}
	e.exec(t, `INSERT INTO accounts (id, email, team) VALUES (1, 'ann@x', 1), (2, 'bob@x', 1), (3, 'cat@x', 2)`)
	return e, e.accountProc(t), e.accountProc(t)
}

// TestPluginLookups: a query by a registered unique column is served from the cache
// and equals GORM's answer; the plugin's writes delete the lookup entries the written
// rows' new values name, so another process reads them at once (a negative entry for
// a new email, a list a row joined). The control writes without the plugin and the
// other process keeps reading its cached answers.
func TestPluginLookups(t *testing.T) {
	t.Parallel()
	e, writer, reader := accountsEnv(t)
	ctx := ctxT(t)

	for range 2 {
		got, ok := reader.byEmail(t, "bob@x")
		var want Account
		if err := e.plain.Where("email = ?", "bob@x").First(&want).Error; err != nil || !ok || got != want {
			t.Fatalf("bob@x through the plugin: %+v %t; GORM: %+v %v", got, ok, want, err)
		}
	}
	if s := reader.accounts.Stats().Unique; s.Hits != 1 || s.Misses != 1 {
		t.Fatalf("unique lookup stats %+v: the plugin did not serve the query by email twice from its lookup", s)
	}
	if _, ok := reader.byEmail(t, "new@x"); ok {
		t.Fatal("new@x found before it exists")
	}
	team := func(p *accountProc, n int) []int64 { return p.team(t, ctx, n) }
	if got := team(reader, 2); !slices.Equal(got, []int64{3}) {
		t.Fatalf("team 2: %v", got)
	}

	// Through the plugin: an email changed to a value cached as absent, a row joining
	// a cached list.
	if err := writer.db.Model(&Account{ID: 1}).Update("email", "new@x").Error; err != nil {
		t.Fatal(err)
	}
	if err := writer.db.Create(&Account{ID: 4, Email: "dan@x", Team: 2}).Error; err != nil {
		t.Fatal(err)
	}
	if got, ok := reader.byEmail(t, "new@x"); !ok || got.ID != 1 {
		t.Fatalf("new@x after the plugin's write: %+v %t, want account 1 at once", got, ok)
	}
	if _, ok := reader.byEmail(t, "ann@x"); ok {
		t.Fatal("ann@x still found after its email changed")
	}
	if got := team(reader, 2); !slices.Equal(got, []int64{3, 4}) {
		t.Fatalf("team 2 after the plugin's insert: %v, want [3 4] at once", got)
	}

	// Control: the same writes without the plugin (and no worker) leave the reader's
	// cached answers.
	if _, ok := reader.byEmail(t, "eve@x"); ok {
		t.Fatal("eve@x found before it exists")
	}
	e.exec(t, `UPDATE accounts SET email = 'eve@x' WHERE id = 2`)
	e.exec(t, `INSERT INTO accounts (id, email, team) VALUES (5, 'fay@x', 2)`)
	if _, ok := reader.byEmail(t, "eve@x"); ok {
		t.Fatal("control: eve@x found after a write without the plugin: the entry was not cached, so this test shows nothing")
	}
	if got := team(reader, 2); !slices.Equal(got, []int64{3, 4}) {
		t.Fatalf("control: team 2 is %v after an insert without the plugin; want the cached [3 4]", got)
	}
}

// TestPluginDeleteNotReadBack: after a DELETE through the plugin, the deleted rows of
// a model with lookups are not read back (a deleted row left every lookup entry, and
// the lookups check the rows they return), in a transaction or not; another process
// reads the lookups without the rows at once all the same. The control: an update is
// read back (one load), which shows that the count sees a read-back.
func TestPluginDeleteNotReadBack(t *testing.T) {
	t.Parallel()
	_, writer, reader := accountsEnv(t)
	ctx := ctxT(t)
	team := func(n int) []int64 { return reader.team(t, ctx, n) }
	if _, ok := reader.byEmail(t, "ann@x"); !ok {
		t.Fatal("ann@x not found")
	}
	if got := team(1); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("team 1: %v", got)
	}
	if got := team(2); !slices.Equal(got, []int64{3}) {
		t.Fatalf("team 2: %v", got)
	}
	loads := func() uint64 { return writer.accounts.Stats().Loads }

	before := loads()
	if err := writer.db.Delete(&Account{}, 1).Error; err != nil {
		t.Fatal(err)
	}
	if err := writer.db.Transaction(func(tx *gorm.DB) error { return tx.Where("team = ?", 2).Delete(&Account{}).Error }); err != nil {
		t.Fatal(err)
	}
	if n := loads() - before; n != 0 {
		t.Errorf("%d loads after two DELETEs through the plugin, want none: the deleted rows were read back", n)
	}
	if _, ok := reader.byEmail(t, "ann@x"); ok {
		t.Error("ann@x still found after its account was deleted")
	}
	if got := team(1); !slices.Equal(got, []int64{2}) {
		t.Errorf("team 1 after account 1 was deleted: %v, want [2]", got)
	}
	if got := team(2); len(got) != 0 {
		t.Errorf("team 2 after its accounts were deleted in a transaction: %v, want none", got)
	}

	before = loads()
	if err := writer.db.Model(&Account{ID: 2}).Update("email", "bo2@x").Error; err != nil {
		t.Fatal(err)
	}
	if n := loads() - before; n != 1 {
		t.Errorf("control: %d loads after an UPDATE through the plugin, want 1 (its row read back)", n)
	}
}
