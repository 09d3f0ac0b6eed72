package writeback_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

// Shipment is a row of logistics.shipments, outside the public schema, whose composite
// key is (region, id) in the table and (ID, Region) in the struct, with a char(4) part,
// and a timestamp Postgres keeps to the microsecond.
type Shipment struct {
	ID     int64  `gorm:"primaryKey;autoIncrement:false"`
	Region string `gorm:"primaryKey;type:char(4)"`
	Note   string
	At     time.Time
}

func (Shipment) TableName() string { return "logistics.shipments" }

const shipmentsSQL = `
CREATE SCHEMA logistics;
CREATE TABLE logistics.shipments (
	region char(4) NOT NULL,
	note text NOT NULL DEFAULT '',
	at timestamptz NOT NULL,
	id bigint NOT NULL,
	PRIMARY KEY (region, id)
);`

// TestWriteBackSchemas: write-back of a table in another schema, keyed by a composite
// key declared in another order than the struct's fields. On a Cluster each write's
// landing touches the row's value, fence, pending record and landing mark in one
// script, which Redis refuses unless they share a slot; rows spread over every
// master. Saves, updates and deletes of many rows reach Postgres, and once flushed
// every read returns the row as Postgres holds it: a char(4) value written short comes
// back padded, a timestamp to the microsecond.
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
	regions := []string{"euw1", "use2", "ap"}
	at := time.Date(2026, 12, 2, 10, 0, 0, 123456789, time.FixedZone("x", 3600))
	const n = 30
	want := make(map[string]Shipment)
	key := func(s Shipment) string { return fmt.Sprint(strings.TrimRight(s.Region, " "), "/", s.ID) }
	for i := int64(1); i <= n; i++ {
		s := Shipment{ID: i, Region: regions[i%3], Note: fmt.Sprint("first ", i), At: at}
		if err := repo.Save(ctx, &s); err != nil {
			t.Fatalf("Save %+v: %v", s, err)
		}
		want[key(s)] = s
	}
	same := func(a, b Shipment) bool {
		return a.ID == b.ID && a.Region == b.Region && a.Note == b.Note && a.At.Equal(b.At)
	}
	// check compares Postgres with what was written (char(4) padded, the time cut
	// to the microsecond), then every read with Postgres.
	check := func(step string) {
		t.Helper()
		var rows []Shipment
		if err := e.db.Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		if len(rows) != len(want) {
			t.Fatalf("%s: Postgres holds %d rows, want %d", step, len(rows), len(want))
		}
		for _, r := range rows {
			w, ok := want[key(r)]
			w.Region = fmt.Sprintf("%-4s", w.Region)
			w.At = w.At.Truncate(time.Microsecond) // as pgx sends it
			if !ok || !same(r, w) {
				t.Fatalf("%s: Postgres holds %+v, want %+v", step, r, w)
			}
			for range 2 { // a miss, then a hit
				got, ok, err := repo.Get(ctx, []any{r.ID, strings.TrimRight(r.Region, " ")})
				if err != nil || !ok || !same(got, r) {
					t.Fatalf("%s: Get(%d, %q) = %+v, %v, %v; want %+v as Postgres holds it", step, r.ID, r.Region, got, ok, err, r)
				}
			}
		}
	}
	drain(t, e.flusher(t, writeback.FlusherOptions{}))
	check("saved")

	for i := int64(1); i <= n; i++ {
		s := Shipment{ID: i, Region: regions[i%3], At: at}
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
