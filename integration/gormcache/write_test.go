package gormcache_test

import (
	"fmt"
	"reflect"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/pgcache/pgcache/writepolicy"
)

// readUser, readMember and readDoc read one row through db as application code does.
func readUser(id int64) form {
	return form{fmt.Sprint("user ", id), true, user(func(db *gorm.DB, u *User) *gorm.DB { return db.First(u, id) })}
}

func readMember(org string, num int) form {
	return form{fmt.Sprint("member ", org, num), true, member(func(db *gorm.DB, m *Member) *gorm.DB {
		m.Org, m.Num = org, num
		return db.First(m)
	})}
}

func readDoc(id string) form {
	return form{"doc " + id, true, func(db *gorm.DB) (any, *gorm.DB) { d := &Doc{}; return d, db.First(d, "id = ?", id) }}
}

// write is a write through GORM and the rows it changes.
type write struct {
	name    string
	watched []form
	run     func(db *gorm.DB) error
}

var writes = []write{
	{"Create", []form{readUser(10)}, func(db *gorm.DB) error { return db.Create(&User{ID: 10, Name: "new"}).Error }},
	{"Create batch", []form{readUser(11), readUser(12)}, func(db *gorm.DB) error {
		return db.Create(&[]User{{ID: 11, Name: "eleven"}, {ID: 12, Name: "twelve"}}).Error
	}},
	{"Create with a key from Postgres", []form{readUser(101)}, func(db *gorm.DB) error {
		if err := db.Exec(`SELECT setval('users_id_seq', 100)`).Error; err != nil {
			return err
		}
		return db.Create(&User{Name: "serial"}).Error
	}},
	{"Save read-modify-write", []form{readUser(1)}, func(db *gorm.DB) error {
		var u User
		if err := db.First(&u, 1).Error; err != nil {
			return err
		}
		u.Name, u.Email = "ann2", nil
		return db.Save(&u).Error
	}},
	{"Save a new row", []form{readUser(13)}, func(db *gorm.DB) error { return db.Save(&User{ID: 13, Name: "saved"}).Error }},
	{"Update", []form{readUser(2)}, func(db *gorm.DB) error { return db.Model(&User{ID: 2}).Update("name", "bobby").Error }},
	{"Updates struct", []form{readUser(5)}, func(db *gorm.DB) error {
		return db.Model(&User{ID: 5}).Updates(User{Name: "dan2", Age: 1}).Error
	}},
	{"UpdateColumn", []form{readUser(1)}, func(db *gorm.DB) error { return db.Model(&User{ID: 1}).UpdateColumn("age", 99).Error }},
	{"Where on another column .Updates", []form{readUser(2), readUser(5), readUser(1)}, func(db *gorm.DB) error {
		return db.Model(&User{}).Where("age > ?", 40).Updates(map[string]any{"name": "senior"}).Error
	}},
	{"UPDATE … FROM another table", []form{readUser(1), readUser(2)}, func(db *gorm.DB) error {
		return db.Model(&User{}).Clauses(clause.From{Tables: []clause.Table{{Name: "notes"}}}).
			Where("notes.user_id = users.id AND notes.body = ?", "first").Update("name", "noted").Error
	}},
	{"Update of the key", []form{readUser(4), readUser(14)}, func(db *gorm.DB) error {
		return db.Model(&User{ID: 4}).Update("id", 14).Error
	}},
	{"Delete by key (soft)", []form{readUser(1)}, func(db *gorm.DB) error { return db.Delete(&User{}, 1).Error }},
	{"Delete batch", []form{readUser(1), readUser(2)}, func(db *gorm.DB) error {
		return db.Delete(&[]User{{ID: 1}, {ID: 2}}).Error
	}},
	{"Where on another column .Delete", []form{readUser(1), readUser(4), readUser(2)}, func(db *gorm.DB) error {
		return db.Where("age < ?", 40).Delete(&User{}).Error
	}},
	{"Unscoped Delete", []form{readUser(5)}, func(db *gorm.DB) error { return db.Unscoped().Delete(&User{}, 5).Error }},
	{"composite key, Where .Update", []form{readMember("acme", 1), readMember("acme", 2), readMember("beta", 1)}, func(db *gorm.DB) error {
		return db.Model(&Member{}).Where("org = ?", "acme").Update("role", "staff").Error
	}},
	{"composite key, Delete", []form{readMember("beta", 1)}, func(db *gorm.DB) error {
		return db.Delete(&Member{Org: "beta", Num: 1}).Error
	}},
	{"uuid key, Update", []form{readDoc(docID)}, func(db *gorm.DB) error {
		return db.Model(&Doc{ID: docID}).Update("title", "spec v2").Error
	}},
	{"db.Transaction", []form{readUser(1), readUser(15)}, func(db *gorm.DB) error {
		return db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Model(&User{ID: 1}).Update("name", "in tx").Error; err != nil {
				return err
			}
			return tx.Create(&User{ID: 15, Name: "fifteen"}).Error
		})
	}},
	{"nested db.Transaction", []form{readUser(2)}, func(db *gorm.DB) error {
		return db.Transaction(func(tx *gorm.DB) error {
			return tx.Transaction(func(tx2 *gorm.DB) error { return tx2.Delete(&User{}, 2).Error })
		})
	}},
	{"Begin, Commit", []form{readUser(5), readUser(2)}, func(db *gorm.DB) error {
		tx := db.Begin()
		if err := tx.Where("id IN ?", []int64{5, 2}).Delete(&User{}).Error; err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit().Error
	}},
	{"SkipDefaultTransaction", []form{readUser(2)}, func(db *gorm.DB) error {
		return db.Session(&gorm.Session{SkipDefaultTransaction: true}).Model(&User{ID: 2}).Update("age", 7).Error
	}},
}

// TestWritesInvalidate: after each write through GORM in one process returns, another
// process (its own *gorm.DB, plugin and Cache, the same Redis) reads the rows it
// changed through the plugin as GORM reads them uncached, though it had them cached
// (or cached as absent) before.
func TestWritesInvalidate(t *testing.T) {
	t.Parallel()
	for _, policy := range []writepolicy.Policy{writepolicy.Invalidate, writepolicy.WriteThrough} {
		for _, w := range writes {
			t.Run(fmt.Sprint(policy, "/", w.name), func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				e.seed(t)
				a, b := e.proc(t, policy), e.proc(t, policy)
				for _, r := range w.watched {
					r.run(b.db) // cached in b, as present or absent
					r.run(b.db)
				}
				if err := w.run(a.db.WithContext(ctxT(t))); err != nil {
					t.Fatal(err)
				}
				for _, r := range w.watched {
					want, wantRes := r.run(e.plain)
					before := b.plugin.Stats().Served
					got, res := r.run(b.db)
					if !sameResult(res, wantRes) || !reflect.DeepEqual(got, want) {
						t.Fatalf("%s after the write, in the other process:\n got %s (%v)\nwant %s (%v)", r.name, deref(got), res.Error, deref(want), wantRes.Error)
					}
					if b.plugin.Stats().Served != before+1 {
						t.Fatalf("%s: the read was not served through the cache", r.name)
					}
				}
				if s := a.plugin.Stats(); s.Invalidated == 0 || s.Unknown != 0 || s.Errors != 0 {
					t.Fatalf("writer's plugin stats %+v: want rows invalidated, none unknown", s)
				}
			})
		}
	}
}

// TestWritesInvalidateControl makes each write without the plugin: the other process
// then reads at least one changed row stale from its cache, which shows that
// TestWritesInvalidate can fail.
func TestWritesInvalidateControl(t *testing.T) {
	t.Parallel()
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.seed(t)
			b := e.proc(t, writepolicy.Invalidate)
			for _, r := range w.watched {
				r.run(b.db)
			}
			if err := w.run(e.open(t)); err != nil {
				t.Fatal(err)
			}
			for _, r := range w.watched {
				want, wantRes := r.run(e.plain)
				if got, res := r.run(b.db); !sameResult(res, wantRes) || !reflect.DeepEqual(got, want) {
					return // stale, as expected without the plugin
				}
			}
			t.Fatal("every changed row read fresh without the plugin's invalidation: the test cannot tell it works")
		})
	}
}
