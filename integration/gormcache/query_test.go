package gormcache_test

import (
	"cmp"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/pgcache/pgcache/writepolicy"
)

// form is one way of asking GORM for rows: run queries db and returns the destination
// it filled and GORM's result.
type form struct {
	name   string
	served bool // whether the plugin answers it through the cache
	run    func(db *gorm.DB) (any, *gorm.DB)
}

func user(f func(db *gorm.DB, u *User) *gorm.DB) func(*gorm.DB) (any, *gorm.DB) {
	return func(db *gorm.DB) (any, *gorm.DB) {
		u := &User{Name: "before", Extra: "kept"} // fields GORM does not set must keep their values
		return u, f(db, u)
	}
}

func users(f func(db *gorm.DB, us *[]User) *gorm.DB) func(*gorm.DB) (any, *gorm.DB) {
	return func(db *gorm.DB) (any, *gorm.DB) {
		us := &[]User{{ID: 99, Name: "stale"}} // GORM replaces the slice
		r := f(db, us)
		slices.SortFunc(*us, func(a, b User) int { return cmp.Compare(a.ID, b.ID) })
		return us, r
	}
}

func member(f func(db *gorm.DB, m *Member) *gorm.DB) func(*gorm.DB) (any, *gorm.DB) {
	return func(db *gorm.DB) (any, *gorm.DB) {
		m := &Member{}
		return m, f(db, m)
	}
}

const docID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"

var forms = []form{
	// Served: lookups by primary key.
	{"First by id", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.First(u, 1) })},
	{"First by int32 id", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.First(u, int32(2)) })},
	{"First zero values and NULLs", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.First(u, 4) })},
	{"First not found", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.First(u, 404) })},
	{"First soft-deleted", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.First(u, 3) })},
	{"Take by id", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Take(u, 5) })},
	{"Last by id", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Last(u, 2) })},
	{"Find one into struct", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Find(u, 1) })},
	{"Find none into struct keeps it", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Find(u, 404) })},
	{"First with the key in the destination", true, user(func(db *gorm.DB, u *User) *gorm.DB { u.ID = 2; return db.First(u) })},
	{"Where id = ?", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Where("id = ?", 1).First(u) })},
	{"Where users.id = ?", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Where("users.id = ?", 5).Take(u) })},
	{`Where "id" = ?`, true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Where(`"id" = ?`, 2).First(u) })},
	{"Where ID = ? (folded)", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Where("ID = ?", 2).First(u) })},
	{"Where map", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Where(map[string]any{"id": 5}).First(u) })},
	{"Where struct", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Where(&User{ID: 1}).First(u) })},
	{"Where column, value", true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Where("id", 2).Find(u) })},
	{"Find slice by ids", true, users(func(db *gorm.DB, us *[]User) *gorm.DB { return db.Find(us, []int64{1, 2, 3, 404, 1}) })},
	{"Find slice none", true, users(func(db *gorm.DB, us *[]User) *gorm.DB { return db.Find(us, []int64{403, 404}) })},
	{"Where id IN ?", true, users(func(db *gorm.DB, us *[]User) *gorm.DB { return db.Where("id IN ?", []int64{5, 4}).Find(us) })},
	{"Where id in ? lower case", true, users(func(db *gorm.DB, us *[]User) *gorm.DB { return db.Where("id in ?", []int{1}).Find(us) })},
	{"First into slice", true, users(func(db *gorm.DB, us *[]User) *gorm.DB { return db.First(us, 2) })},
	{"Find pointers", true, func(db *gorm.DB) (any, *gorm.DB) {
		var us []*User
		r := db.Find(&us, []int64{2, 1})
		slices.SortFunc(us, func(a, b *User) int { return cmp.Compare(a.ID, b.ID) })
		return &us, r
	}},
	{"Limit above the keys", true, users(func(db *gorm.DB, us *[]User) *gorm.DB { return db.Limit(5).Find(us, []int64{1, 2}) })},
	{"composite key, two Wheres", true, member(func(db *gorm.DB, m *Member) *gorm.DB {
		return db.Where("org = ?", "acme").Where("num = ?", 2).First(m)
	})},
	{"composite key in the destination", true, member(func(db *gorm.DB, m *Member) *gorm.DB { m.Org, m.Num = "beta", 1; return db.First(m) })},
	{"composite key not found", true, member(func(db *gorm.DB, m *Member) *gorm.DB { return db.Where(&Member{Org: "beta", Num: 9}).Take(m) })},
	{"uuid key", true, func(db *gorm.DB) (any, *gorm.DB) { d := &Doc{}; return d, db.First(d, "id = ?", docID) }},

	// To Postgres untouched.
	{"Select", false, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Select("id", "name").First(u, 1) })},
	{"Omit", false, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Omit("age").First(u, 1) })},
	{"Distinct", false, users(func(db *gorm.DB, us *[]User) *gorm.DB { return db.Distinct().Find(us, []int64{1, 2}) })},
	{"Joins", false, users(func(db *gorm.DB, us *[]User) *gorm.DB {
		return db.Joins("LEFT JOIN notes ON notes.user_id = users.id").Find(us, []int64{1})
	})},
	{"Preload", false, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Preload("Notes").First(u, 1) })},
	{"FOR UPDATE", false, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Clauses(clause.Locking{Strength: "UPDATE"}).First(u, 1) })},
	{"Unscoped", false, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Unscoped().First(u, 3) })},
	{"Scopes adding a condition", false, user(func(db *gorm.DB, u *User) *gorm.DB {
		return db.Scopes(func(d *gorm.DB) *gorm.DB { return d.Where("age > ?", 40) }).First(u, 1)
	})},
	{"extra Where", false, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Where("active = ?", true).First(u, 2) })},
	{"Or", false, users(func(db *gorm.DB, us *[]User) *gorm.DB { return db.Where("id = ?", 1).Or("id = ?", 2).Find(us) })},
	{"Not", false, users(func(db *gorm.DB, us *[]User) *gorm.DB { return db.Not("id = ?", 1).Find(us, []int64{1, 2}) })},
	{"Order on several keys", false, users(func(db *gorm.DB, us *[]User) *gorm.DB { return db.Order("name").Find(us, []int64{1, 2}) })},
	{"Offset", false, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Offset(1).First(u, 1) })},
	{"Limit below the keys", false, users(func(db *gorm.DB, us *[]User) *gorm.DB { return db.Limit(1).Find(us, []int64{1, 2}) })},
	{"First of several keys", false, user(func(db *gorm.DB, u *User) *gorm.DB { return db.First(u, []int64{2, 1}) })},
	{"Last of several keys", false, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Last(u, []int64{2, 1}) })},
	{"Raw", false, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Raw("SELECT * FROM users WHERE id = ?", 1).Scan(u) })},
	{"Group and Having", false, users(func(db *gorm.DB, us *[]User) *gorm.DB {
		return db.Group("id").Having("count(*) > ?", 0).Find(us, []int64{1, 2})
	})},
	{"string value for an integer key", false, user(func(db *gorm.DB, u *User) *gorm.DB { return db.Where("id = ?", "1").First(u) })},
	{"id = ? with a list", false, users(func(db *gorm.DB, us *[]User) *gorm.DB { return db.Where("id = ? OR age > ?", 1, 50).Find(us) })},
	{"empty IN", false, users(func(db *gorm.DB, us *[]User) *gorm.DB { return db.Where("id IN ?", []int64{}).Find(us) })},
	{"another destination type", false, func(db *gorm.DB) (any, *gorm.DB) {
		var dto struct{ ID int64 }
		return &dto, db.Model(&User{}).Where("id = ?", 1).Find(&dto)
	}},
	{"Count", false, func(db *gorm.DB) (any, *gorm.DB) {
		var n int64
		return &n, db.Model(&User{}).Where("id = ?", 1).Count(&n)
	}},
	{"inside db.Transaction", false, user(func(db *gorm.DB, u *User) *gorm.DB {
		var r *gorm.DB
		_ = db.Transaction(func(tx *gorm.DB) error { r = tx.First(u, 1); return nil })
		return r
	})},
	{"inside Begin", false, user(func(db *gorm.DB, u *User) *gorm.DB {
		tx := db.Begin()
		defer tx.Rollback()
		return tx.First(u, 2)
	})},
	{"composite key, one column", false, member(func(db *gorm.DB, m *Member) *gorm.DB { return db.Where("org = ?", "acme").First(m) })},
	{"composite key, First by value", false, member(func(db *gorm.DB, m *Member) *gorm.DB { return db.First(m, 1) })},
	{"unregistered model", false, func(db *gorm.DB) (any, *gorm.DB) { n := &Note{}; return n, db.First(n, 1) }},
}

// TestQueryForms compares, for every form, the plugin's answer (twice: a miss, then a
// hit) with GORM's uncached answer on the same data, and checks whether the cache was
// used.
func TestQueryForms(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.seed(t)
	pr := e.proc(t, writepolicy.Invalidate)
	for _, f := range forms {
		t.Run(f.name, func(t *testing.T) {
			want, wantRes := f.run(e.plain)
			for i := range 2 {
				before, reads := pr.plugin.Stats(), pr.reads()
				got, res := f.run(pr.db.WithContext(ctxT(t)))
				if !sameResult(res, wantRes) || !reflect.DeepEqual(got, want) {
					t.Fatalf("run %d through the plugin:\n got %+v (rows %d, err %v)\nwant %+v (rows %d, err %v)",
						i+1, deref(got), res.RowsAffected, res.Error, deref(want), wantRes.RowsAffected, wantRes.Error)
				}
				after := pr.plugin.Stats()
				served, usedCache := after.Served-before.Served, pr.reads() > reads
				if f.served && (served != 1 || !usedCache) {
					t.Fatalf("run %d: served %d, cache read %v; want the query served through the cache", i+1, served, usedCache)
				}
				if !f.served && (served != 0 || usedCache) {
					t.Fatalf("run %d: served %d, cache read %v; want the query sent to Postgres untouched", i+1, served, usedCache)
				}
			}
		})
	}
	if s := pr.users.Stats(); s.Hits == 0 || s.NegativeHits == 0 {
		t.Fatalf("user stats %+v: the second runs should have been hits and negative hits", s)
	}
}

// sameResult reports whether two results agree: rows affected, and the error (nil,
// ErrRecordNotFound, or another).
func sameResult(a, b *gorm.DB) bool {
	if a.RowsAffected != b.RowsAffected {
		return false
	}
	switch {
	case a.Error == nil || b.Error == nil:
		return a.Error == nil && b.Error == nil
	case errors.Is(b.Error, gorm.ErrRecordNotFound):
		return errors.Is(a.Error, gorm.ErrRecordNotFound)
	}
	return !errors.Is(a.Error, gorm.ErrRecordNotFound)
}

func deref(v any) string {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	return fmt.Sprintf("%+v", rv.Interface())
}
