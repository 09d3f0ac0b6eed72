package gormcache_test

import (
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/pgcache/pgcache/gormcache"
	"github.com/pgcache/pgcache/readthrough"
)

// Item lives in a schema other than public, under a mixed-case table name.
type Item struct {
	Code  string `gorm:"primaryKey;type:char(4)"`
	Label string
}

func (Item) TableName() string { return `app."Items"` }

// TestOtherSchema: a model in a non-public schema, with a mixed-case table and a
// char(4) key, is served, and a Where(...).Update through GORM in one process (sent
// with RETURNING of the schema-qualified key) is read fresh by another.
func TestOtherSchema(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.exec(t, `CREATE SCHEMA app`)
	e.exec(t, `CREATE TABLE app."Items" (code char(4) PRIMARY KEY, label text NOT NULL)`)
	e.exec(t, `INSERT INTO app."Items" VALUES ('ab', 'first'), ('cd', 'second')`)
	procs := make([]*gormcache.Plugin, 2)
	dbs := make([]*gorm.DB, 2)
	for i := range procs {
		dbs[i] = e.open(t)
		p, err := gormcache.New(dbs[i], e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := gormcache.Register[Item](p, readthrough.ModelOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := dbs[i].Use(p); err != nil {
			t.Fatal(err)
		}
		procs[i] = p
	}
	read := func(db *gorm.DB, code string) Item {
		t.Helper()
		var it Item
		if err := db.First(&it, "code = ?", code).Error; err != nil {
			t.Fatal(err)
		}
		return it
	}
	var want Item
	if err := e.plain.First(&want, "code = ?", "ab").Error; err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if got := read(dbs[1], "ab"); got != want {
			t.Fatalf("read %+v, GORM reads %+v", got, want)
		}
	}
	if err := dbs[0].Model(&Item{}).Where("label = ?", "first").Update("label", "changed").Error; err != nil {
		t.Fatal(err)
	}
	if got := read(dbs[1], "ab"); got.Label != "changed" {
		t.Fatalf("the other process reads %+v after the update", got)
	}
	if s := procs[1].Stats(); s.Served != 3 {
		t.Fatalf("reader's stats %+v, want 3 reads served", s)
	}
	if s := procs[0].Stats(); s.Invalidated != 1 || s.Unknown != 0 {
		t.Fatalf("writer's stats %+v, want one row invalidated", s)
	}
}
