package near_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/readthrough"
)

// Seat has a composite key of a uuid and a char(4), declared in the model in another
// order than the table's primary key, in a schema other than public: the near tier
// must drop it whoever changes it, as the Redis tier does.
type Seat struct {
	Code  string `gorm:"primaryKey;type:uuid"`
	Hall  string `gorm:"primaryKey;type:char(4)"`
	Label string
}

func (Seat) TableName() string { return "app.seats" }

// TestNearSchemas: rows of such a table, held in process by one process, are dropped
// when another process writes them through the library and when raw SQL changes them
// under the invalidation worker, spelled as callers do (an upper-case uuid, a char(4)
// value without its padding).
func TestNearSchemas(t *testing.T) {
	const code = "6f1c1e52-9f3a-4a0e-8f55-1d2b3c4d5e6f"
	e := newEnv(t, nil)
	e.exec(t, `CREATE SCHEMA app`)
	e.exec(t, `CREATE TABLE app.seats (hall char(4), code uuid, label text, PRIMARY KEY (hall, code))`)
	e.exec(t, `INSERT INTO app.seats VALUES ('A1', ?, 'v0'), ('B', ?, 'v0')`, code, strings.Replace(code, "6f", "70", 1))

	w, err := invalidator.NewWorker(e.rdb, invalidator.WorkerOptions{
		Postgres: e.url,
		Stream: cdc.Options{Slot: "s_nearschemas_" + e.prefix, Publication: "pgcache", Tables: []string{"app.seats"},
			StatusInterval: 100 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond},
		Invalidator: invalidator.Options{Prefix: e.prefix},
	})
	if err != nil {
		t.Fatal(err)
	}
	fixture.RunWorker(t, t.Context(), w)

	a := register[Seat](t, e.process(t), nearOn)
	b := register[Seat](t, e.process(t), nearOn)
	id := []any{strings.ToUpper(code), "A1"} // in the model's field order; the uuid upper case, the char(4) unpadded
	label := func(r *readthrough.Repository[Seat]) string {
		t.Helper()
		s, ok, err := r.Get(context.Background(), id)
		if err != nil || !ok {
			t.Fatalf("Get(%v) = %+v, %v, %v", id, s, ok, err)
		}
		return s.Label
	}
	inNearSeat := func(r *readthrough.Repository[Seat]) {
		t.Helper()
		integration.Eventually(t, "the seat in the near tier", func() bool {
			before := r.Stats().NearHits
			label(r)
			return r.Stats().NearHits > before
		})
	}
	inNearSeat(a)
	inNearSeat(b)

	// A write through b: b reads it at once, a within the notification delay.
	s, _, err := b.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	s.Label = "by-b"
	if err := b.Save(context.Background(), &s); err != nil {
		t.Fatal(err)
	}
	if got := label(b); got != "by-b" {
		t.Fatalf("the writer reads %q after its Save, want by-b", got)
	}
	integration.Eventually(t, "the other process to read by-b", func() bool { return label(a) == "by-b" })

	// Raw SQL, spelled as Postgres prints it: the worker deletes the entry, and both
	// near tiers drop the row.
	inNearSeat(a)
	inNearSeat(b)
	e.exec(t, `UPDATE app.seats SET label = 'raw' WHERE hall = 'A1' AND code = ?`, code)
	for _, r := range []*readthrough.Repository[Seat]{a, b} {
		integration.Eventually(t, "the near tier to drop the row changed by raw SQL", func() bool { return label(r) == "raw" })
	}
	if got := label(a); got != "raw" {
		t.Fatalf("read %q after the raw UPDATE was seen, want raw", got)
	}
}
