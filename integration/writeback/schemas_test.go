package writeback_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

// Shipment is a row of logistics.shipments, outside the public schema, whose composite
// key is (region, id) in the table and (ID, Region) in the struct, with a char(4) part.
type Shipment struct {
	ID     int64  `gorm:"primaryKey;autoIncrement:false"`
	Region string `gorm:"primaryKey;type:char(4)"`
	Note   string
}

func (Shipment) TableName() string { return "logistics.shipments" }

const shipmentsSQL = `
CREATE SCHEMA logistics;
CREATE TABLE logistics.shipments (
	region char(4) NOT NULL,
	note text NOT NULL DEFAULT '',
	id bigint NOT NULL,
	PRIMARY KEY (region, id)
);`

// TestWriteBackSchemas: write-back of a table in another schema, keyed by a composite
// key declared in another order than the struct's fields. On a Cluster each write's
// landing touches the row's value, fence, pending record and landing mark in one
// script, which Redis refuses unless they share a slot; rows spread over every
// master. Saves, updates and deletes of many rows reach Postgres as readers saw them.
func TestWriteBackSchemas(t *testing.T) { fixture.OnBoth(t, testWriteBackSchemas) }

func testWriteBackSchemas(t *testing.T, top topology) {
	t.Parallel()
	e := newEnv(t, top)
	ctx := ctxT(t)
	if err := e.db.Exec(shipmentsSQL).Error; err != nil {
		t.Fatal(err)
	}
	c, err := readthrough.New(e.db, e.rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := readthrough.Register[Shipment](c, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	if err != nil {
		t.Fatal(err)
	}
	regions := []string{"euw1", "use2", "apn1"}
	const n = 30
	want := make(map[string]Shipment)
	key := func(s Shipment) string { return fmt.Sprint(s.Region, "/", s.ID) }
	for i := int64(1); i <= n; i++ {
		s := Shipment{ID: i, Region: regions[i%3], Note: fmt.Sprint("first ", i)}
		if err := repo.Save(ctx, &s); err != nil {
			t.Fatalf("Save %+v: %v", s, err)
		}
		want[key(s)] = s
	}
	check := func(step string) {
		t.Helper()
		for i := int64(1); i <= n; i++ {
			id := []any{i, regions[i%3]}
			w, wok := want[fmt.Sprint(regions[i%3], "/", i)]
			got, ok, err := repo.Get(ctx, id)
			if err != nil || ok != wok || got != w {
				t.Fatalf("%s: Get(%v) = %+v, %v, %v; want %+v, %v", step, id, got, ok, err, w, wok)
			}
		}
		var rows []Shipment
		if err := e.db.Order("id").Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		if len(rows) != len(want) {
			t.Fatalf("%s: Postgres holds %d rows, want %d", step, len(rows), len(want))
		}
		for _, r := range rows {
			if w := want[key(r)]; r != w {
				t.Fatalf("%s: Postgres holds %+v, want %+v", step, r, w)
			}
		}
	}
	drain(t, e.flusher(t, writeback.FlusherOptions{}))
	check("saved")

	for i := int64(1); i <= n; i++ {
		s := Shipment{ID: i, Region: regions[i%3]}
		if i%5 == 0 {
			if err := repo.Delete(ctx, []any{s.ID, s.Region}); err != nil {
				t.Fatal(err)
			}
			delete(want, key(s))
			continue
		}
		s.Note = fmt.Sprint("second ", i)
		if err := repo.Save(ctx, &s); err != nil {
			t.Fatal(err)
		}
		want[key(s)] = s
	}
	drain(t, e.flusher(t, writeback.FlusherOptions{}))
	check("updated and deleted")
}
