package gormcache

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

type account struct {
	ID    int64 `gorm:"primaryKey"`
	Email string
	Name  string
}

// analyse returns what lookupOf makes of the query q runs, without a database: the
// query callback is replaced by one that only analyses.
func analyse(t *testing.T, unique bool, q func(db *gorm.DB) *gorm.DB) (lookup, bool) {
	t.Helper()
	db, err := gorm.Open(postgres.New(postgres.Config{DSN: "host=127.0.0.1 port=1 sslmode=disable"}),
		&gorm.Config{DisableAutomaticPing: true, Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	stmt := &gorm.Statement{DB: db}
	if err := stmt.Parse(&account{}); err != nil {
		t.Fatal(err)
	}
	m := &model{typ: stmt.Schema.ModelType, sch: stmt.Schema, pk: stmt.Schema.PrimaryFields,
		key: func(id any) (string, error) { return fmt.Sprint(id), nil }}
	if unique {
		m.unique = map[string]columnLookup{"email": {field: stmt.Schema.LookUpField("email"),
			get: func(context.Context, any) (reflect.Value, bool, error) { return reflect.Value{}, false, nil }}}
	}
	var l lookup
	var ok bool
	if err := db.Callback().Query().Replace("gorm:query", func(db *gorm.DB) { l, ok = m.lookupOf(db) }); err != nil {
		t.Fatal(err)
	}
	q(db.Session(&gorm.Session{}))
	return l, ok
}

// TestLookupOf covers the analysis alone, the seam for lookups by unique column
// included (nothing registers those yet); the integration tests compare the answers.
func TestLookupOf(t *testing.T) {
	for _, c := range []struct {
		name   string
		unique bool
		q      func(db *gorm.DB) *gorm.DB
		want   lookup
		ok     bool
	}{
		{"First by id", false, func(db *gorm.DB) *gorm.DB { return db.First(&account{}, 7) }, lookup{ids: []any{7}}, true},
		{"Find ids, repeats removed", false, func(db *gorm.DB) *gorm.DB { return db.Find(&[]account{}, []int64{3, 1, 3}) }, lookup{ids: []any{int64(3), int64(1)}}, true},
		{"Where IN", false, func(db *gorm.DB) *gorm.DB { return db.Where("id IN ?", []int{2}).Find(&[]account{}) }, lookup{ids: []any{2}}, true},
		{"key in the destination and a condition", false, func(db *gorm.DB) *gorm.DB { return db.First(&account{ID: 1}, 2) }, lookup{}, false},
		{"unique column without the seam", false, func(db *gorm.DB) *gorm.DB { return db.Where("email = ?", "a@b").First(&account{}) }, lookup{}, false},
		{"unique column through the seam", true, func(db *gorm.DB) *gorm.DB { return db.Where("email = ?", "a@b").First(&account{}) }, lookup{column: "email", value: "a@b"}, true},
		{"unique column, map", true, func(db *gorm.DB) *gorm.DB { return db.Where(map[string]any{"email": "a@b"}).Take(&account{}) }, lookup{column: "email", value: "a@b"}, true},
		{"unique column into a slice", true, func(db *gorm.DB) *gorm.DB { return db.Find(&[]account{}, "email = ?", "a@b") }, lookup{}, false},
		{"unique column and the key", true, func(db *gorm.DB) *gorm.DB { return db.Where("email = ?", "a@b").First(&account{}, 1) }, lookup{}, false},
		{"unique column, several values", true, func(db *gorm.DB) *gorm.DB { return db.Where("email IN ?", []string{"a", "b"}).Find(&account{}) }, lookup{}, false},
		{"unique column of another type", true, func(db *gorm.DB) *gorm.DB { return db.Where("email = ?", 5).First(&account{}) }, lookup{}, false},
		{"destination by value", false, func(db *gorm.DB) *gorm.DB { return db.Find([]account{}, 1) }, lookup{}, false},
		{"another column", true, func(db *gorm.DB) *gorm.DB { return db.Where("name = ?", "a").First(&account{}) }, lookup{}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, ok := analyse(t, c.unique, c.q)
			if ok != c.ok || ok && !reflect.DeepEqual(l, c.want) {
				t.Fatalf("lookupOf = %+v, %v; want %+v, %v", l, ok, c.want, c.ok)
			}
		})
	}
}
