package gormcache_test

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/pgcache/pgcache/writepolicy"
)

// TestRandomWorkload runs one random sequence of reads and writes through GORM twice,
// on two databases seeded alike: through two processes with the plugin (reads and
// writes spread over both), and through GORM alone. Every read must give the same
// answer in both.
func TestRandomWorkload(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	on, off := newEnv(t), newEnv(t)
	on.seed(t)
	off.seed(t)
	procs := []*proc{on.proc(t, writepolicy.Invalidate), on.proc(t, writepolicy.WriteThrough)}
	r := rand.New(rand.NewPCG(seed, 0))
	served := uint64(0)
	for step := range 400 {
		op := ops[r.IntN(len(ops))]
		arg := r.Int64N(8) + 1
		pr := procs[r.IntN(len(procs))]
		got, gerr := op.run(pr.db, arg)
		want, werr := op.run(off.plain, arg)
		if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d, %s(%d) (seed %d):\n plugin %+v, %v\n  GORM  %+v, %v", step, op.name, arg, seed, got, gerr, want, werr)
		}
	}
	for _, pr := range procs {
		served += pr.plugin.Stats().Served
	}
	if served == 0 {
		t.Fatal("no read was served through the cache")
	}
}

type op struct {
	name string
	run  func(db *gorm.DB, id int64) (any, error)
}

func sorted(us []User) []User {
	slices.SortFunc(us, func(a, b User) int { return cmp.Compare(a.ID, b.ID) })
	for i := range us {
		// Times as Postgres returns them in either process, whatever their location;
		// the two runs soft-delete at different moments.
		us[i].CreatedAt = us[i].CreatedAt.UTC()
		us[i].DeletedAt.Time = time.Time{}
	}
	return us
}

var ops = []op{
	{"First", func(db *gorm.DB, id int64) (any, error) {
		var u User
		err := db.First(&u, id).Error
		return sorted([]User{u}), err
	}},
	{"Find ids", func(db *gorm.DB, id int64) (any, error) {
		var us []User
		err := db.Find(&us, []int64{id, id + 1, id + 3}).Error
		return sorted(us), err
	}},
	{"Where IN", func(db *gorm.DB, id int64) (any, error) {
		var us []User
		err := db.Where("id IN ?", []int64{id, 9 - id}).Find(&us).Error
		return sorted(us), err
	}},
	{"Unscoped Find", func(db *gorm.DB, id int64) (any, error) {
		var us []User
		err := db.Unscoped().Find(&us, id).Error
		return sorted(us), err
	}},
	{"Create", func(db *gorm.DB, id int64) (any, error) {
		return nil, db.Where("id = ?", id).FirstOrCreate(&User{ID: id, Name: fmt.Sprint("c", id), CreatedAt: time.Unix(id, 0)}).Error
	}},
	{"Save", func(db *gorm.DB, id int64) (any, error) {
		return nil, db.Save(&User{ID: id, Name: fmt.Sprint("s", id), Age: int(id), CreatedAt: time.Unix(id, 0)}).Error
	}},
	{"Update", func(db *gorm.DB, id int64) (any, error) {
		return nil, db.Model(&User{ID: id}).Update("age", gorm.Expr("age + 1")).Error
	}},
	{"Where Updates", func(db *gorm.DB, id int64) (any, error) {
		return nil, db.Model(&User{}).Where("age > ?", id*5).Updates(map[string]any{"name": fmt.Sprint("w", id)}).Error
	}},
	{"Delete", func(db *gorm.DB, id int64) (any, error) { return nil, db.Delete(&User{}, id).Error }},
	{"Unscoped Delete", func(db *gorm.DB, id int64) (any, error) { return nil, db.Unscoped().Delete(&User{}, id).Error }},
	{"Where Delete", func(db *gorm.DB, id int64) (any, error) {
		return nil, db.Where("age BETWEEN ? AND ?", id*6, id*6+3).Delete(&User{}).Error
	}},
	{"Transaction", func(db *gorm.DB, id int64) (any, error) {
		return nil, db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Model(&User{ID: id}).Update("name", "t").Error; err != nil {
				return err
			}
			return tx.Unscoped().Model(&User{ID: id + 1}).Update("deleted_at", nil).Error
		})
	}},
}
