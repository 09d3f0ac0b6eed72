package readthrough_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// Member has a unique email and soft deletes.
type Member struct {
	ID        int64  `gorm:"primaryKey"`
	Email     string `gorm:"uniqueIndex"`
	Name      string
	DeletedAt gorm.DeletedAt
}

// Item belongs to an order: the list lookup by OrderID.
type Item struct {
	ID      int64 `gorm:"primaryKey"`
	OrderID int64 `gorm:"index"`
	Name    string
	// Note is nullable: NULL names no list.
	Note *string
}

func lookupCache(t *testing.T, e *env) *readthrough.Cache {
	t.Helper()
	return e.cache(t, e.openDB(t))
}

func members(t *testing.T, c *readthrough.Cache, opts readthrough.ModelOptions) *readthrough.Repository[Member] {
	t.Helper()
	opts.Unique = [][]string{{"Email"}}
	r, err := readthrough.Register[Member](c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func items(t *testing.T, c *readthrough.Cache, opts readthrough.ModelOptions) *readthrough.Repository[Item] {
	t.Helper()
	opts.Lists = [][]string{{"OrderID"}}
	r, err := readthrough.Register[Item](c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func migrate(t *testing.T, e *env, models ...any) {
	t.Helper()
	if err := e.db.AutoMigrate(models...); err != nil {
		t.Fatal(err)
	}
}

func ids[T any](rows []T, id func(T) int64) []int64 {
	out := make([]int64, len(rows))
	for i, r := range rows {
		out[i] = id(r)
	}
	return out
}

func itemIDs(rows []Item) []int64 { return ids(rows, func(i Item) int64 { return i.ID }) }

// listIs fails the test unless ListBy("OrderID").Get(order) returns the items want,
// each holding order.
func listIs(ctx context.Context, t *testing.T, r *readthrough.Repository[Item], order int64, want ...int64) {
	t.Helper()
	rows, err := r.ListBy("OrderID").Get(ctx, order)
	if err != nil {
		t.Fatal(err)
	}
	if got := itemIDs(rows); !slices.Equal(got, want) {
		t.Fatalf("items of order %d = %v, want %v", order, got, want)
	}
	for _, it := range rows {
		if it.OrderID != order {
			t.Fatalf("items of order %d include %+v, which belongs to order %d", order, it, it.OrderID)
		}
	}
}

// memberIs fails the test unless By("Email").Get(email) returns member id (0: none).
func memberIs(ctx context.Context, t *testing.T, r *readthrough.Repository[Member], email string, id int64) {
	t.Helper()
	m, ok, err := r.By("Email").Get(ctx, email)
	if err != nil {
		t.Fatal(err)
	}
	if (id == 0) == ok || ok && (m.ID != id || m.Email != email) {
		t.Fatalf("member by %q = %+v, %v; want id %d", email, m, ok, id)
	}
}

// TestLookupUnique: a unique lookup by a text column misses, fills, hits, caches "no
// such row", and takes its rows through the primary-key cache; GetMany answers
// several values in order; NULL and unregistered lookups are errors, not panics.
func TestLookupUnique(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	migrate(t, e, &Member{})
	e.exec(t, `INSERT INTO members (id, email, name) VALUES (1, 'a@x', 'A'), (2, 'b@x', 'B'), (3, 'c@x', 'C')`)
	r := members(t, lookupCache(t, e), readthrough.ModelOptions{})
	ctx := ctxT(t)

	memberIs(ctx, t, r, "a@x", 1) // miss: the fill's own rows
	memberIs(ctx, t, r, "a@x", 1) // hit: entry + the row through Get (a miss, then cached)
	memberIs(ctx, t, r, "a@x", 1) // hit: entry + row hit
	memberIs(ctx, t, r, "nobody@x", 0)
	memberIs(ctx, t, r, "nobody@x", 0)
	s := r.Stats()
	if s.Unique != (readthrough.LookupStats{Hits: 3, Misses: 2}) || s.Hits != 1 {
		t.Fatalf("stats %+v, want 3 unique hits (one negative), 2 misses, and one row hit", s)
	}
	key, err := r.By("Email").Key("nobody@x")
	if err != nil {
		t.Fatal(err)
	}
	if entry, err := e.rdb.Get(ctx, key).Result(); err != nil || entry != "n" {
		t.Fatalf("entry of an absent value = %q, %v; want the negative entry", entry, err)
	}

	got, err := r.By("email").GetMany(ctx, "c@x", "nobody@x", "a@x", "b@x")
	if err != nil {
		t.Fatal(err)
	}
	if ids := ids(got, func(m Member) int64 { return m.ID }); !slices.Equal(ids, []int64{3, 1, 2}) {
		t.Fatalf("GetMany = %v, want members 3, 1, 2 in the order asked", ids)
	}

	if _, _, err := r.By("Email").Get(ctx, nil); !errors.Is(err, readthrough.ErrNullLookup) {
		t.Fatalf("lookup by nil: %v, want ErrNullLookup", err)
	}
	if _, _, err := r.By("Email").Get(ctx, (*string)(nil)); !errors.Is(err, readthrough.ErrNullLookup) {
		t.Fatalf("lookup by a nil *string: %v, want ErrNullLookup", err)
	}
	if _, _, err := r.By("Name").Get(ctx, "A"); !errors.Is(err, readthrough.ErrNotRegistered) {
		t.Fatalf("unregistered lookup: %v, want ErrNotRegistered", err)
	}
	if _, err := r.ListBy("Email").Get(ctx, "a@x"); !errors.Is(err, readthrough.ErrNotRegistered) {
		t.Fatalf("ListBy of a unique lookup: %v, want ErrNotRegistered", err)
	}
	if _, _, err := r.By("Nope").Get(ctx, "a@x"); err == nil {
		t.Fatal("lookup by an unknown field: no error")
	}
}

// TestLookupList: a list is ordered by primary key, cached, answered from one
// multi-get, and read from Postgres (not cached, counted) past the cap.
func TestLookupList(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	migrate(t, e, &Item{})
	e.exec(t, `INSERT INTO items (id, order_id, name) VALUES (5, 1, 'e'), (2, 1, 'b'), (9, 1, 'i'), (3, 2, 'c'), (4, 3, 'd'), (6, 3, 'f'), (7, 3, 'g')`)
	r := items(t, lookupCache(t, e), readthrough.ModelOptions{ListCap: 2})
	ctx := ctxT(t)

	listIs(ctx, t, r, 2, 3)
	listIs(ctx, t, r, 2, 3)
	listIs(ctx, t, r, 99)
	listIs(ctx, t, r, 99)
	listIs(ctx, t, r, 1, 2, 5, 9) // over the cap: Postgres, every time
	listIs(ctx, t, r, 1, 2, 5, 9)
	s := r.Stats()
	if s.List != (readthrough.LookupStats{Hits: 2, Misses: 4, OverCap: 2}) {
		t.Fatalf("list stats %+v, want 2 hits, 4 misses, 2 over the cap", s.List)
	}
	key, err := r.ListBy("OrderID").Key(int64(1))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := e.rdb.Exists(ctx, key).Result(); err != nil || n != 0 {
		t.Fatalf("a list over the cap is cached (%d, %v)", n, err)
	}
	if !strings.Contains(key, "l=order_id") {
		t.Fatalf("list key %q does not name its lookup", key)
	}
}

// TestLookupRegister: Register refuses lookups that cannot work, and says what to
// change.
func TestLookupRegister(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	migrate(t, e, &Member{}, &Item{})
	e.exec(t, `CREATE TABLE stamps (id bigint PRIMARY KEY, at timestamptz UNIQUE, score float8 UNIQUE, tag text)`)
	type Stamp struct {
		ID    int64 `gorm:"primaryKey"`
		At    string
		Score float64
		Tag   string
	}
	c := lookupCache(t, e)
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"no unique index", register[Item](c, readthrough.ModelOptions{Unique: [][]string{{"OrderID"}}}), "no unique index"},
		{"the primary key", register[Item](c, readthrough.ModelOptions{Unique: [][]string{{"ID"}}}), "is the primary key"},
		{"timestamp", register[Stamp](c, readthrough.ModelOptions{Unique: [][]string{{"At"}}}), "spells in more than one way"},
		{"float", register[Stamp](c, readthrough.ModelOptions{Lists: [][]string{{"Score"}}}), "spells in more than one way"},
		{"unknown field", register[Stamp](c, readthrough.ModelOptions{Lists: [][]string{{"Nope"}}}), "no field or column"},
		{"write-back", register[Member](c, readthrough.ModelOptions{Unique: [][]string{{"Email"}}, WritePolicy: writepolicy.WriteBack}), "write-back"},
		{"negative cap", register[Item](c, readthrough.ModelOptions{Lists: [][]string{{"OrderID"}}, ListCap: -1}), "ListCap"},
	} {
		if !errors.Is(tc.err, readthrough.ErrConfig) || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: Register = %v, want ErrConfig saying %q", tc.name, tc.err, tc.want)
		}
	}
}

func register[T any](c *readthrough.Cache, opts readthrough.ModelOptions) error {
	_, err := readthrough.Register[T](c, opts)
	return err
}

// Meta is embedded in Login, with json tags that the cache ignores.
type Meta struct {
	Tenant string `json:"tenant_name"`
}

// Login has a composite unique index declared (handle, tenant), in another order
// than its columns, and unique uuid, char(n) and numeric columns.
type Login struct {
	ID     int64 `gorm:"primaryKey" json:"id"`
	Meta   `json:"meta"`
	Handle string `json:"h"`
	Ref    string `gorm:"type:uuid;uniqueIndex"`
	Code   string `gorm:"type:char(6);uniqueIndex"`
	Serial string `gorm:"type:numeric(12,2);uniqueIndex"`
}

// TestLookupKinds: lookups by a composite unique index declared in another order
// than its columns (values in either field order), and by uuid, char(n) and numeric
// columns, in every spelling Postgres accepts, on a model with an embedded struct and
// json tags.
func TestLookupKinds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	migrate(t, e, &Login{})
	e.exec(t, `CREATE UNIQUE INDEX logins_handle_tenant ON logins (handle, tenant)`)
	e.exec(t, `INSERT INTO logins (id, tenant, handle, ref, code, serial) VALUES
		(1, 'acme', 'root', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'ab', 12.5),
		(2, 'acme', 'ops', 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'cd', 7),
		(3, 'zeta', 'root', 'c0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'ef', 0.01)`)
	r, err := readthrough.Register[Login](lookupCache(t, e), readthrough.ModelOptions{
		Unique: [][]string{{"Tenant", "Handle"}, {"Ref"}, {"code"}, {"Serial"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	for _, tc := range []struct {
		by   []string
		val  any
		want int64
	}{
		{[]string{"Tenant", "Handle"}, []any{"zeta", "root"}, 3},
		{[]string{"Handle", "Tenant"}, []any{"root", "zeta"}, 3},
		{[]string{"handle", "tenant"}, []any{"root", "acme"}, 1},
		{[]string{"Handle", "Tenant"}, []any{"ops", "zeta"}, 0},
		{[]string{"Ref"}, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", 1},
		{[]string{"Ref"}, "b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 2},
		{[]string{"Code"}, "cd", 2},
		{[]string{"Code"}, "cd    ", 2},
		{[]string{"Serial"}, "12.50", 1},
		{[]string{"Serial"}, "12.5", 1},
		{[]string{"Serial"}, "0.010", 3},
		{[]string{"Serial"}, "8", 0},
	} {
		for pass := range 2 { // a miss, then a hit
			a, ok, err := r.By(tc.by...).Get(ctx, tc.val)
			if err != nil || ok != (tc.want != 0) || a.ID != tc.want {
				t.Fatalf("By(%v).Get(%v) pass %d = %+v, %v, %v; want account %d", tc.by, tc.val, pass, a, ok, err, tc.want)
			}
		}
	}
	k1, _ := r.By("Serial").Key("12.50")
	k2, _ := r.By("Serial").Key("1.25e1")
	if k1 != k2 {
		t.Fatalf("numeric spellings of one value name two entries: %q, %q", k1, k2)
	}
	if _, _, err := r.By("Tenant", "Handle").Get(ctx, "acme"); err == nil {
		t.Fatal("a composite lookup by one value: no error")
	}
	if s := r.Stats().Unique; s.Stale != 0 || s.Hits == 0 {
		t.Fatalf("unique stats %+v", s)
	}
}

// TestLookupSoftDelete: a soft-deleted row is in no lookup; restoring it is seen.
func TestLookupSoftDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	migrate(t, e, &Member{})
	type Part struct {
		ID        int64 `gorm:"primaryKey"`
		Box       int64
		DeletedAt gorm.DeletedAt
	}
	migrate(t, e, &Part{})
	e.exec(t, `INSERT INTO members (id, email, name) VALUES (1, 'a@x', 'A')`)
	e.exec(t, `INSERT INTO parts (id, box) VALUES (1, 7), (2, 7)`)
	c := lookupCache(t, e)
	r := members(t, c, readthrough.ModelOptions{})
	parts, err := readthrough.Register[Part](c, readthrough.ModelOptions{Lists: [][]string{{"Box"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	box := func(want ...int64) {
		t.Helper()
		rows, err := parts.ListBy("Box").Get(ctx, int64(7))
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(rows, func(p Part) int64 { return p.ID }); !slices.Equal(got, want) {
			t.Fatalf("parts of box 7 = %v, want %v", got, want)
		}
	}
	memberIs(ctx, t, r, "a@x", 1)
	memberIs(ctx, t, r, "a@x", 1)
	box(1, 2)
	box(1, 2)

	if err := r.Delete(ctx, int64(1)); err != nil {
		t.Fatal(err)
	}
	if err := parts.Delete(ctx, int64(2)); err != nil {
		t.Fatal(err)
	}
	memberIs(ctx, t, r, "a@x", 0)
	memberIs(ctx, t, r, "a@x", 0)
	box(1)
	box(1)
	// Unscoped, the soft-deleted rows are there, from Postgres.
	if m, ok, err := r.WithDB(e.db.Unscoped()).By("Email").Get(ctx, "a@x"); err != nil || !ok || !m.DeletedAt.Valid {
		t.Fatalf("unscoped lookup = %+v, %v, %v; want the soft-deleted member", m, ok, err)
	}

	// Restore through the library: Save with DeletedAt cleared, unscoped (GORM's
	// scoped Save would not reach the soft-deleted row).
	all := r.WithDB(e.db.Unscoped())
	m, _, err := all.Get(ctx, int64(1))
	if err != nil {
		t.Fatal(err)
	}
	m.DeletedAt = gorm.DeletedAt{}
	if err := all.Save(ctx, &m); err != nil {
		t.Fatal(err)
	}
	memberIs(ctx, t, r, "a@x", 1)
	// Restore by raw SQL, invalidated as the worker would: the row and the entries
	// its new values name.
	e.exec(t, `UPDATE parts SET deleted_at = NULL WHERE id = 2`)
	if err := parts.Invalidate(ctx, int64(2)); err != nil {
		t.Fatal(err)
	}
	if err := parts.ListBy("Box").Invalidate(ctx, int64(7)); err != nil {
		t.Fatal(err)
	}
	box(1, 2)
}

// TestLookupNaming: column names follow GORM's naming strategy (a table prefix,
// column tags), and a table in another schema than public.
func TestLookupNaming(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	type Person struct {
		ID   int64  `gorm:"primaryKey"`
		Mail string `gorm:"column:mail_addr;uniqueIndex"`
		Team int64  `gorm:"column:team_ref"`
	}
	db := e.openDB(t)
	db.Config.NamingStrategy = schema.NamingStrategy{TablePrefix: "app_"}
	if err := db.AutoMigrate(&Person{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(`INSERT INTO app_people VALUES (1, 'p@x', 4), (2, 'q@x', 4)`).Error; err != nil {
		t.Fatal(err)
	}
	people, err := readthrough.Register[Person](e.cache(t, db), readthrough.ModelOptions{
		Unique: [][]string{{"mail_addr"}}, Lists: [][]string{{"Team"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	for range 2 {
		p, ok, err := people.By("Mail").Get(ctx, "q@x")
		if err != nil || !ok || p.ID != 2 {
			t.Fatalf("person by mail = %+v, %v, %v", p, ok, err)
		}
		team, err := people.ListBy("team_ref").Get(ctx, int64(4))
		if err != nil || len(team) != 2 {
			t.Fatalf("team 4 = %+v, %v", team, err)
		}
	}
	if k, _ := people.By("Mail").Key("q@x"); !strings.Contains(k, "app_people") || !strings.Contains(k, "u=mail_addr") {
		t.Fatalf("key %q does not name the table and column as the catalog does", k)
	}

	e.exec(t, `CREATE SCHEMA shop`)
	e.exec(t, `CREATE TABLE shop.lines (id bigint PRIMARY KEY, cart bigint NOT NULL, sku text NOT NULL UNIQUE)`)
	e.exec(t, `INSERT INTO shop.lines VALUES (1, 10, 's1'), (2, 10, 's2'), (3, 11, 's3')`)
	lines, err := readthrough.Register[Line](e.cache(t, e.db), readthrough.ModelOptions{
		Unique: [][]string{{"SKU"}}, Lists: [][]string{{"Cart"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		l, ok, err := lines.By("SKU").Get(ctx, "s3")
		if err != nil || !ok || l.ID != 3 {
			t.Fatalf("line by sku = %+v, %v, %v", l, ok, err)
		}
		cart, err := lines.ListBy("Cart").Get(ctx, int64(10))
		if err != nil || len(cart) != 2 {
			t.Fatalf("cart 10 = %+v, %v", cart, err)
		}
	}
	if k, _ := lines.ListBy("Cart").Key(int64(10)); !strings.Contains(k, "shop.lines") {
		t.Fatalf("key %q does not name the schema", k)
	}
}

// Line is a row of shop.lines, a table outside the public schema.
type Line struct {
	ID   int64 `gorm:"primaryKey"`
	Cart int64
	SKU  string `gorm:"column:sku"`
}

func (Line) TableName() string { return "shop.lines" }

// TestLookupCheckOnRead: with no invalidator running, raw-SQL updates move a unique
// value to another row and a row to another list; only the rows' own keys are
// invalidated (as the worker's row path would), not the entries. A lookup never
// returns the row that no longer holds the value: the check finds the entry stale,
// deletes it and fills it again. The controls turn the check off and get the wrong
// row, so the test can fail.
func TestLookupCheckOnRead(t *testing.T) {
	t.Parallel()
	for _, checked := range []bool{true, false} {
		name := map[bool]string{true: "checked", false: "unchecked control"}[checked]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			migrate(t, e, &Member{}, &Item{})
			e.exec(t, `INSERT INTO members (id, email, name) VALUES (1, 'a@x', 'A'), (2, 'b@x', 'B')`)
			e.exec(t, `INSERT INTO items (id, order_id, name) VALUES (1, 1, 'x'), (2, 1, 'y'), (3, 2, 'z')`)
			c := lookupCache(t, e)
			mr := members(t, c, readthrough.ModelOptions{})
			ir := items(t, c, readthrough.ModelOptions{})
			ctx := testhooks.WithRead(ctxT(t), &testhooks.Read{Unchecked: !checked})
			memberIs(ctx, t, mr, "a@x", 1)
			listIs(ctx, t, ir, 1, 1, 2)

			// a@x moves from member 1 to member 2; item 2 moves to order 2.
			e.exec(t, `UPDATE members SET email = 'old-a@x' WHERE id = 1`)
			e.exec(t, `UPDATE members SET email = 'a@x' WHERE id = 2`)
			e.exec(t, `UPDATE items SET order_id = 2 WHERE id = 2`)
			if err := mr.Invalidate(ctx, int64(1), int64(2)); err != nil {
				t.Fatal(err)
			}
			if err := ir.Invalidate(ctx, int64(2)); err != nil {
				t.Fatal(err)
			}
			m, ok, err := mr.By("Email").Get(ctx, "a@x")
			if err != nil {
				t.Fatal(err)
			}
			rows, err := ir.ListBy("OrderID").Get(ctx, int64(1))
			if err != nil {
				t.Fatal(err)
			}
			if !checked {
				if !ok || m.ID != 1 || m.Email == "a@x" || !slices.Equal(itemIDs(rows), []int64{1, 2}) {
					t.Fatalf("unchecked control: got %+v and items %v; want the stale member 1 and item 2, else this test cannot tell the check works", m, itemIDs(rows))
				}
				return
			}
			if !ok || m.ID != 2 || m.Email != "a@x" {
				t.Fatalf("member by a@x = %+v, %v; want member 2", m, ok)
			}
			if got := itemIDs(rows); !slices.Equal(got, []int64{1}) {
				t.Fatalf("items of order 1 = %v, want [1]", got)
			}
			if s := mr.Stats().Unique; s.Stale != 1 {
				t.Fatalf("unique stats %+v, want one stale entry", s)
			}
			if s := ir.Stats().List; s.Stale != 1 {
				t.Fatalf("list stats %+v, want one stale entry", s)
			}
			memberIs(ctx, t, mr, "a@x", 2)
			memberIs(ctx, t, mr, "old-a@x", 1)
			listIs(ctx, t, ir, 1, 1)
			if s := mr.Stats().Unique.Stale + ir.Stats().List.Stale; s != 2 {
				t.Fatalf("%d stale entries after the refills, want 2", s)
			}
		})
	}
}

// execErr runs a statement from a goroutine other than the test's (a fill's), where
// t.Fatal must not be called.
func execErr(t *testing.T, e *env, sql string) {
	if err := e.db.Exec(sql).Error; err != nil {
		t.Errorf("%s: %v", sql, err)
	}
}

// pauseLookup returns hooks that run change once, between the load and the store of
// the fill of the entry key, and the context carrying them.
func pauseLookup(ctx context.Context, key string, h testhooks.Read, change func()) context.Context {
	var once sync.Once
	h.AfterLoad = func(k string) {
		if k == key {
			once.Do(change)
		}
	}
	return testhooks.WithRead(ctx, &h)
}

// TestLookupFillRace: a change of a row that enters the entry's set lands between a
// fill's load and its store, and is invalidated as the worker would (the row's key
// and the entries its new values name). The fenced fill is refused, so the next read
// sees the change; the unfenced control caches what the fill loaded, and the next
// read misses the row (the check on read cannot see a row an entry leaves out). A row
// that leaves a list during the fill is caught by the check instead; its control
// turns the check off. Each race runs with the racing read as a model's first (a GET,
// then the lease) and after a miss (the combined read, which takes the lease).
func TestLookupFillRace(t *testing.T) {
	t.Parallel()
	type race struct {
		name string
		// change is made during the fill of order 1's list (or of b@x's entry for
		// "unique taken").
		change func(ctx context.Context, t *testing.T, e *env, mr *readthrough.Repository[Member], ir *readthrough.Repository[Item])
		// racing is what the racing read returns, want the next read's answer.
		racing, want []int64
		// control names the hook that shows the stale result.
		control testhooks.Read
		stale   []int64
		unique  bool
	}
	invalidateItem := func(ctx context.Context, t *testing.T, ir *readthrough.Repository[Item], id int64, order int64) {
		if err := ir.Invalidate(ctx, id); err != nil {
			t.Error(err)
		}
		if err := ir.ListBy("OrderID").Invalidate(ctx, order); err != nil {
			t.Error(err)
		}
	}
	races := []race{
		{name: "row inserted into the list", change: func(ctx context.Context, t *testing.T, e *env, _ *readthrough.Repository[Member], ir *readthrough.Repository[Item]) {
			execErr(t, e, `INSERT INTO items (id, order_id, name) VALUES (4, 1, 'new')`)
			invalidateItem(ctx, t, ir, 4, 1)
		}, racing: []int64{1, 2}, want: []int64{1, 2, 4}, control: testhooks.Read{Unfenced: true}, stale: []int64{1, 2}},
		{name: "row moved into the list", change: func(ctx context.Context, t *testing.T, e *env, _ *readthrough.Repository[Member], ir *readthrough.Repository[Item]) {
			execErr(t, e, `UPDATE items SET order_id = 1 WHERE id = 3`)
			invalidateItem(ctx, t, ir, 3, 1)
		}, racing: []int64{1, 2}, want: []int64{1, 2, 3}, control: testhooks.Read{Unfenced: true}, stale: []int64{1, 2}},
		{name: "row moved out of the list", change: func(ctx context.Context, t *testing.T, e *env, _ *readthrough.Repository[Member], ir *readthrough.Repository[Item]) {
			execErr(t, e, `UPDATE items SET order_id = 2 WHERE id = 2`)
			invalidateItem(ctx, t, ir, 2, 2)
		}, racing: []int64{1, 2}, want: []int64{1}, control: testhooks.Read{Unchecked: true}, stale: []int64{1, 2}},
		{name: "unique value taken by another row", unique: true, change: func(ctx context.Context, t *testing.T, e *env, mr *readthrough.Repository[Member], _ *readthrough.Repository[Item]) {
			execErr(t, e, `UPDATE members SET email = 'b@x' WHERE id = 2`)
			if err := mr.Invalidate(ctx, int64(2)); err != nil {
				t.Error(err)
			}
			if err := mr.By("Email").Invalidate(ctx, "b@x"); err != nil {
				t.Error(err)
			}
		}, racing: nil, want: []int64{2}, control: testhooks.Read{Unfenced: true}, stale: nil},
	}
	for _, rc := range races {
		for _, guarded := range []bool{true, false} {
			for _, primed := range []bool{false, true} {
				name := rc.name + map[bool]string{true: "", false: " (control)"}[guarded] + map[bool]string{false: "", true: " (combined read)"}[primed]
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					e := newEnv(t)
					migrate(t, e, &Member{}, &Item{})
					e.exec(t, `INSERT INTO members (id, email, name) VALUES (1, 'a@x', 'A'), (2, 'c@x', 'C')`)
					e.exec(t, `INSERT INTO items (id, order_id, name) VALUES (1, 1, 'x'), (2, 1, 'y'), (3, 2, 'z')`)
					c := lookupCache(t, e)
					mr := members(t, c, readthrough.ModelOptions{})
					ir := items(t, c, readthrough.ModelOptions{})
					ctx := ctxT(t)
					var h testhooks.Read
					if !guarded {
						h = rc.control
					}
					read := func(ctx context.Context) []int64 {
						t.Helper()
						if rc.unique {
							m, ok, err := mr.By("Email").Get(ctx, "b@x")
							if err != nil {
								t.Fatal(err)
							}
							if !ok {
								return nil
							}
							return []int64{m.ID}
						}
						rows, err := ir.ListBy("OrderID").Get(ctx, int64(1))
						if err != nil {
							t.Fatal(err)
						}
						return itemIDs(rows)
					}
					key, err := ir.ListBy("OrderID").Key(int64(1))
					if rc.unique {
						key, err = mr.By("Email").Key("b@x")
					}
					if err != nil {
						t.Fatal(err)
					}
					if primed {
						// A miss of another value: the models' next reads are combined
						// (store.ReadOrLease), so the racing fill's lease is taken by one.
						memberIs(ctx, t, mr, "a@x", 1)
						listIs(ctx, t, ir, 2, 3)
					}
					rctx := pauseLookup(ctx, key, h, func() { rc.change(ctx, t, e, mr, ir) })
					if got := read(rctx); !slices.Equal(got, rc.racing) {
						t.Fatalf("racing read = %v, want %v (what the fill loaded)", got, rc.racing)
					}
					got := read(testhooks.WithRead(ctx, &h))
					switch {
					case guarded && !slices.Equal(got, rc.want):
						t.Fatalf("after the change, read = %v, want %v", got, rc.want)
					case !guarded && !slices.Equal(got, rc.stale):
						t.Fatalf("control: read = %v, want the stale %v (else this test cannot tell the guard works)", got, rc.stale)
					}
					refused := mr.Stats().FillsRefused + ir.Stats().FillsRefused
					if guarded && rc.control.Unfenced && refused != 1 {
						t.Fatalf("%d fills refused, want the racing one", refused)
					}
				})
			}
		}
	}
}

// TestLookupReadYourWrites: after a write through the library returns, a lookup in
// another process (another Cache, another pool) sees it, under invalidate and
// write-through, in and out of transactions.
func TestLookupReadYourWrites(t *testing.T) {
	t.Parallel()
	for _, p := range []writepolicy.Policy{writepolicy.Invalidate, writepolicy.WriteThrough} {
		t.Run(p.String(), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			migrate(t, e, &Member{}, &Item{})
			e.exec(t, `INSERT INTO members (id, email, name) VALUES (1, 'a@x', 'A')`)
			e.exec(t, `INSERT INTO items (id, order_id, name) VALUES (1, 1, 'x')`)
			wc, rc := lookupCache(t, e), lookupCache(t, e)
			wm, wi := members(t, wc, readthrough.ModelOptions{WritePolicy: p}), items(t, wc, readthrough.ModelOptions{WritePolicy: p})
			rm, ri := members(t, rc, readthrough.ModelOptions{WritePolicy: p}), items(t, rc, readthrough.ModelOptions{WritePolicy: p})
			ctx := ctxT(t)
			warm := func() {
				t.Helper()
				for _, email := range []string{"a@x", "b@x", "z@x"} {
					if _, _, err := rm.By("Email").Get(ctx, email); err != nil {
						t.Fatal(err)
					}
				}
				for _, o := range []int64{1, 2, 3} {
					if _, err := ri.ListBy("OrderID").Get(ctx, o); err != nil {
						t.Fatal(err)
					}
				}
			}
			warm()
			warm()
			// Enter: a new member and item.
			if err := wm.Create(ctx, &Member{ID: 2, Email: "b@x"}); err != nil {
				t.Fatal(err)
			}
			if err := wi.Create(ctx, &Item{ID: 2, OrderID: 1}); err != nil {
				t.Fatal(err)
			}
			memberIs(ctx, t, rm, "b@x", 2)
			listIs(ctx, t, ri, 1, 1, 2)
			warm()
			// Move: a@x becomes z@x, item 2 moves to order 2.
			if err := wm.Save(ctx, &Member{ID: 1, Email: "z@x", Name: "A"}); err != nil {
				t.Fatal(err)
			}
			if err := wi.Save(ctx, &Item{ID: 2, OrderID: 2}); err != nil {
				t.Fatal(err)
			}
			memberIs(ctx, t, rm, "a@x", 0)
			memberIs(ctx, t, rm, "z@x", 1)
			listIs(ctx, t, ri, 1, 1)
			listIs(ctx, t, ri, 2, 2)
			warm()
			// In a transaction, twice to one row: both writes' entries are deleted at
			// the commit, and lookups inside it read Postgres.
			err := readthrough.Transaction(ctx, e.db, func(tx *readthrough.Tx) error {
				if err := wi.In(tx).Save(ctx, &Item{ID: 1, OrderID: 2}); err != nil {
					return err
				}
				if err := wi.In(tx).Save(ctx, &Item{ID: 1, OrderID: 3}); err != nil {
					return err
				}
				rows, err := wi.In(tx).ListBy("OrderID").Get(ctx, int64(3))
				if err != nil || len(rows) != 1 {
					return fmt.Errorf("lookup in the transaction = %v, %v; want item 1", rows, err)
				}
				return wm.In(tx).Delete(ctx, int64(2))
			})
			if err != nil {
				t.Fatal(err)
			}
			listIs(ctx, t, ri, 1)
			listIs(ctx, t, ri, 2, 2)
			listIs(ctx, t, ri, 3, 1)
			memberIs(ctx, t, rm, "b@x", 0)
		})
	}
}

// TestLookupNotUnique: a partial unique index lets several rows outside its predicate
// share a value; a unique lookup then returns ErrNotUnique, never one of them, and
// caches nothing.
func TestLookupNotUnique(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `CREATE TABLE tickets (id bigint PRIMARY KEY, code text NOT NULL, open boolean NOT NULL)`)
	e.exec(t, `CREATE UNIQUE INDEX tickets_open_code ON tickets (code) WHERE open`)
	e.exec(t, `INSERT INTO tickets VALUES (1, 'x', false), (2, 'x', false), (3, 'y', true)`)
	type Ticket struct {
		ID   int64 `gorm:"primaryKey"`
		Code string
		Open bool
	}
	r, err := readthrough.Register[Ticket](lookupCache(t, e), readthrough.ModelOptions{Unique: [][]string{{"Code"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	for range 2 {
		if tk, ok, err := r.By("Code").Get(ctx, "y"); err != nil || !ok || tk.ID != 3 {
			t.Fatalf("ticket y = %+v, %v, %v", tk, ok, err)
		}
		if tk, ok, err := r.By("Code").Get(ctx, "x"); !errors.Is(err, readthrough.ErrNotUnique) || ok {
			t.Fatalf("ticket x = %+v, %v, %v; want ErrNotUnique", tk, ok, err)
		}
	}
	key, _ := r.By("Code").Key("x")
	if n, err := e.rdb.Exists(ctx, key).Result(); err != nil || n != 0 {
		t.Fatalf("an ambiguous value is cached (%d, %v)", n, err)
	}
}

// TestLookupGetManyNotUnique: GetMany of values one of which a thousand rows hold
// (outside a partial unique index's predicate) returns ErrNotUnique, caches nothing
// for it, and loads a few rows, not the thousand: its query stops at one row more
// than values, and the values are then read one by one, each stopping at two rows.
func TestLookupGetManyNotUnique(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `CREATE TABLE tickets (id bigint PRIMARY KEY, code text NOT NULL, open boolean NOT NULL)`)
	e.exec(t, `CREATE UNIQUE INDEX tickets_open_code ON tickets (code) WHERE open`)
	e.exec(t, `INSERT INTO tickets SELECT g, 'x', false FROM generate_series(1, 1000) g`)
	e.exec(t, `INSERT INTO tickets VALUES (1001, 'y', true), (1002, 'z', true)`)
	type Ticket struct {
		ID   int64 `gorm:"primaryKey"`
		Code string
		Open bool
	}
	db := e.openDB(t)
	var loaded atomic.Int64
	err := db.Callback().Query().After("gorm:query").Register("test:rows", func(tx *gorm.DB) {
		if tx.Statement.Table == "tickets" {
			loaded.Add(tx.RowsAffected)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := readthrough.New(db, e.rdb, readthrough.Options{Prefix: e.prefix})
	if err != nil {
		t.Fatal(err)
	}
	r, err := readthrough.Register[Ticket](c, readthrough.ModelOptions{Unique: [][]string{{"Code"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	for _, direct := range []bool{false, true} {
		by := r.By("Code")
		if direct { // unscoped: Postgres alone, in one query
			by = r.WithDB(db.Unscoped()).By("Code")
		}
		loaded.Store(0)
		got, err := by.GetMany(ctx, "y", "x", "z")
		if !errors.Is(err, readthrough.ErrNotUnique) {
			t.Fatalf("GetMany (unscoped %v) = %+v, %v; want ErrNotUnique", direct, got, err)
		}
		if n := loaded.Load(); n > 10 {
			t.Fatalf("GetMany (unscoped %v) loaded %d rows to find that x is not unique, want a few", direct, n)
		}
	}
	key, _ := r.By("Code").Key("x")
	if n, err := e.rdb.Exists(ctx, key).Result(); err != nil || n != 0 {
		t.Fatalf("an ambiguous value is cached (%d, %v)", n, err)
	}
}

// TestLookupFlightJoinedAfterWrite: concurrent misses of a list in one process share
// one fill, but a read that begins after a write returned never gets the list that
// fill loaded before the write (read-your-writes): it waits for a fill of its own.
func TestLookupFlightJoinedAfterWrite(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	migrate(t, e, &Item{})
	e.exec(t, `INSERT INTO items (id, order_id, name) VALUES (1, 1, 'x')`)
	r := items(t, lookupCache(t, e), readthrough.ModelOptions{})
	ctx := ctxT(t)
	key, err := r.ListBy("OrderID").Key(int64(1))
	if err != nil {
		t.Fatal(err)
	}
	loaded, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	joined := make(chan struct{}, 8)
	rctx := testhooks.WithRead(ctx, &testhooks.Read{
		AfterLoad: func(k string) {
			if k == key {
				once.Do(func() {
					close(loaded)
					<-release
				})
			}
		},
		Joined: func(k string) {
			if k == key {
				joined <- struct{}{}
			}
		},
	})
	get := func() <-chan []int64 {
		out := make(chan []int64, 1)
		go func() {
			rows, err := r.ListBy("OrderID").Get(rctx, int64(1))
			if err != nil {
				t.Error(err)
			}
			out <- itemIDs(rows)
		}()
		return out
	}
	first := get()
	wait(t, joined, "the first read to begin the fill")
	wait(t, loaded, "the fill to load the list") // [1], not stored yet
	if err := r.Create(ctx, &Item{ID: 2, OrderID: 1}); err != nil {
		t.Fatal(err)
	}
	second := get()                                     // begins after Create returned
	wait(t, joined, "the second read to join the fill") // which loaded [1]
	close(release)
	if got := wait(t, first, "the first read"); !slices.Equal(got, []int64{1}) {
		t.Fatalf("the read that began the fill got %v, want the [1] it loaded (else the test shows nothing)", got)
	}
	if got := wait(t, second, "the second read"); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("a read begun after Create returned got %v, want [1 2]", got)
	}
	if s := r.Stats(); s.FillsRefused != 1 {
		t.Fatalf("stats %+v, want the first fill refused", s)
	}
}
