package writeback_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgcache/pgcache/writeback"
)

func TestChangeRoundTrip(t *testing.T) {
	at := time.Date(2024, 2, 29, 23, 59, 58, 123456789, time.FixedZone("x", 5*3600+1800))
	for _, c := range []writeback.Change{
		{
			Schema: "public", Table: "widgets", Key: []string{"id"},
			Columns: []string{"id", "name", "price", "ratio", "ok", "blob", "at", "nothing", "bad", "empty"},
			Values:  []any{int64(-9223372036854775808), "sprøcket, \"quoted\"\x00", int64(42), 0.1, true, []byte{0, 1, 255}, at, nil, "\xff\xfe", ""},
			Update:  []string{"name", "price"},
		},
		{Schema: "Sales", Table: `Order "Items"`, Key: []string{"a", "b"}, Columns: []string{"a", "b"}, Values: []any{"x", int64(2)}, Delete: true},
		{Schema: "public", Table: "gadgets", Key: []string{"id"}, Columns: []string{"id", "deleted_at"}, Values: []any{int64(7), at},
			Delete: true, SoftDelete: "deleted_at"},
	} {
		b, err := writeback.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := writeback.UnmarshalChange(b)
		if err != nil {
			t.Fatalf("UnmarshalChange(%s): %v", b, err)
		}
		// time.Time compares by instant; the rest must come back identical, types too.
		for i, v := range c.Values {
			if tm, ok := v.(time.Time); ok {
				if g, ok := got.Values[i].(time.Time); !ok || !g.Equal(tm) || g.Format(time.RFC3339Nano) != tm.Format(time.RFC3339Nano) {
					t.Errorf("time %v came back as %v", tm, got.Values[i])
				}
				got.Values[i] = v
			}
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("round trip:\n got %#v\nwant %#v", got, c)
		}
	}
}

func TestChangeRejects(t *testing.T) {
	ok := writeback.Change{Table: "t", Key: []string{"id"}, Columns: []string{"id"}, Values: []any{int64(1)}}
	for name, c := range map[string]writeback.Change{
		"no table":           {Key: []string{"id"}, Columns: []string{"id"}, Values: []any{int64(1)}},
		"no key":             {Table: "t", Columns: []string{"id"}, Values: []any{int64(1)}},
		"key not written":    {Table: "t", Key: []string{"id"}, Columns: []string{"x"}, Values: []any{int64(1)}},
		"values":             {Table: "t", Key: []string{"id"}, Columns: []string{"id"}, Values: []any{}},
		"repeated":           {Table: "t", Key: []string{"id"}, Columns: []string{"id", "id"}, Values: []any{int64(1), int64(1)}},
		"update the key":     {Table: "t", Key: []string{"id"}, Columns: []string{"id"}, Values: []any{int64(1)}, Update: []string{"id"}},
		"not a driver value": {Table: "t", Key: []string{"id"}, Columns: []string{"id"}, Values: []any{[]string{"x"}}},
		"int is not int64":   {Table: "t", Key: []string{"id"}, Columns: []string{"id"}, Values: []any{1}},
		"soft delete of the key": {Table: "t", Key: []string{"id"}, Columns: []string{"id"}, Values: []any{int64(1)},
			Delete: true, SoftDelete: "id"},
		"soft upsert": {Table: "t", Key: []string{"id"}, Columns: []string{"id", "d"}, Values: []any{int64(1), nil}, SoftDelete: "d"},
		"soft delete of other columns": {Table: "t", Key: []string{"id"}, Columns: []string{"id", "d", "e"}, Values: []any{int64(1), nil, nil},
			Delete: true, SoftDelete: "d"},
	} {
		if _, err := writeback.Marshal(c); !errors.Is(err, writeback.ErrBadChange) {
			t.Errorf("%s: Marshal error %v, want ErrBadChange", name, err)
		}
	}
	if _, err := writeback.Marshal(ok); err != nil {
		t.Fatal(err)
	}
	head := `{"op":"upsert","table":"t","key":["id"],"cols":["id"]}` + "\n"
	for _, in := range []string{
		``, `{`, "[]\n", `{"op":"merge","table":"t","key":["id"],"cols":["id"]}` + "\n2:i1",
		head, head + "2:i1" + "2:i2", head + "2:q1", head + "4:i1.5", head + "2:b2", head + "2:i1junk",
		head + "10:tyesterday", head + "0:", head + ":i1", head + "9:i1", head + "-1:i", head + "2:n1",
		`{"op":"upsert","table":"","key":["id"],"cols":["id"]}` + "\n2:i1",
		`{"op":"upsert","table":"t","key":["id"],"cols":["x"]}` + "\n2:i1",
		`{"op":"softdelete","table":"t","key":["id"],"cols":["id","d"]}` + "\n2:i11:n",
	} {
		if _, err := writeback.UnmarshalChange([]byte(in)); !errors.Is(err, writeback.ErrBadChange) {
			t.Errorf("UnmarshalChange(%q) error %v, want ErrBadChange", in, err)
		}
	}
}

func FuzzUnmarshalChange(f *testing.F) {
	seed := writeback.Change{Schema: "public", Table: "w", Key: []string{"id"}, Columns: []string{"id", "n"},
		Values: []any{int64(1), "x"}, Update: []string{"n"}}
	b, _ := writeback.Marshal(seed)
	f.Add(b)
	f.Add([]byte(`{"op":"delete","table":"t","key":["a","b"],"cols":["a","b"]}` + "\n2:s11:n"))
	f.Add([]byte(`{"op":"upsert","table":"t","key":["id"],"cols":["id"]}` + "\n21:t2024-01-01T00:00:00Z"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := writeback.UnmarshalChange(b)
		if err != nil {
			if !errors.Is(err, writeback.ErrBadChange) {
				t.Fatalf("error %v does not wrap ErrBadChange", err)
			}
			return
		}
		// What decodes encodes again, to a change that decodes to the same thing.
		again, err := writeback.Marshal(c)
		if err != nil {
			t.Fatalf("Marshal of a decoded change: %v", err)
		}
		c2, err := writeback.UnmarshalChange(again)
		if err != nil || len(c2.Values) != len(c.Values) || c2.Delete != c.Delete {
			t.Fatalf("second round trip: %+v, %v", c2, err)
		}
		if sql, args := writeback.Statement([]*writeback.Change{&c}); sql == "" || len(args) == 0 {
			t.Fatalf("no statement for %+v", c)
		}
	})
}

func TestStatement(t *testing.T) {
	a := &writeback.Change{Schema: "public", Table: "user", Key: []string{"id"}, Columns: []string{"id", "name", "created"},
		Values: []any{int64(1), "a", nil}, Update: []string{"name"}}
	b := &writeback.Change{Schema: "public", Table: "user", Key: []string{"id"}, Columns: []string{"id", "name", "created"},
		Values: []any{int64(2), "b", nil}, Update: []string{"name"}}
	sql, args := writeback.Statement([]*writeback.Change{a, b})
	want := `INSERT INTO "public"."user" ("id", "name", "created") VALUES ($1, $2, $3), ($4, $5, $6) ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name"`
	if sql != want || len(args) != 6 {
		t.Errorf("upsert:\n got %s (%d args)\nwant %s", sql, len(args), want)
	}
	d1 := &writeback.Change{Table: `we"ird`, Key: []string{"a", "b"}, Columns: []string{"a", "b"}, Values: []any{"x", int64(1)}, Delete: true}
	d2 := &writeback.Change{Table: `we"ird`, Key: []string{"a", "b"}, Columns: []string{"a", "b"}, Values: []any{"y", int64(2)}, Delete: true}
	sql, args = writeback.Statement([]*writeback.Change{d1, d2})
	want = `DELETE FROM "we""ird" WHERE ("a", "b") IN (($1, $2), ($3, $4))`
	if sql != want || !reflect.DeepEqual(args, []any{"x", int64(1), "y", int64(2)}) {
		t.Errorf("delete:\n got %s %v\nwant %s", sql, args, want)
	}
	sql, _ = writeback.Statement([]*writeback.Change{{Table: "j", Key: []string{"a"}, Columns: []string{"a"}, Values: []any{int64(1)}}})
	if !strings.HasSuffix(sql, `ON CONFLICT ("a") DO NOTHING`) {
		t.Errorf("key-only upsert: %s", sql)
	}
	// A composite key declared in another order than its columns: values go in the
	// key's order, each taken from its own column.
	o1 := &writeback.Change{Schema: "s", Table: "t", Key: []string{"b", "a"}, Columns: []string{"a", "b"}, Values: []any{"x", int64(1)}, Delete: true}
	o2 := &writeback.Change{Schema: "s", Table: "t", Key: []string{"b", "a"}, Columns: []string{"a", "b"}, Values: []any{"y", int64(2)}, Delete: true}
	sql, args = writeback.Statement([]*writeback.Change{o1, o2})
	want = `DELETE FROM "s"."t" WHERE ("b", "a") IN (($1, $2), ($3, $4))`
	if sql != want || !reflect.DeepEqual(args, []any{int64(1), "x", int64(2), "y"}) {
		t.Errorf("delete, key out of column order:\n got %s %v\nwant %s", sql, args, want)
	}
	d3 := &writeback.Change{Table: "u", Key: []string{"id"}, Columns: []string{"id"}, Values: []any{int64(7)}, Delete: true}
	d4 := &writeback.Change{Table: "u", Key: []string{"id"}, Columns: []string{"id"}, Values: []any{int64(8)}, Delete: true}
	sql, args = writeback.Statement([]*writeback.Change{d3, d4})
	want = `DELETE FROM "u" WHERE "id" IN ($1, $2)`
	if sql != want || !reflect.DeepEqual(args, []any{int64(7), int64(8)}) {
		t.Errorf("delete, single key:\n got %s %v\nwant %s", sql, args, want)
	}
	// A soft delete sets the column only on a row not deleted yet; its key may be
	// composite and out of column order too.
	at := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	sd := &writeback.Change{Schema: "s", Table: "t", Key: []string{"b", "a"}, Columns: []string{"a", "b", "deleted_at"},
		Values: []any{"x", int64(1), at}, Delete: true, SoftDelete: "deleted_at"}
	sql, args = writeback.Statement([]*writeback.Change{sd})
	want = `UPDATE "s"."t" SET "deleted_at" = $1 WHERE "deleted_at" IS NULL AND "b" = $2 AND "a" = $3`
	if sql != want || !reflect.DeepEqual(args, []any{at, int64(1), "x"}) {
		t.Errorf("soft delete:\n got %s %v\nwant %s", sql, args, want)
	}
}

type sqlState string

func (s sqlState) Error() string    { return "pg error " + string(s) }
func (s sqlState) SQLState() string { return string(s) }

func TestPermanent(t *testing.T) {
	for err, want := range map[error]bool{
		sqlState("23514"):              true,  // check violation
		sqlState("23505"):              true,  // unique violation
		sqlState("22P02"):              true,  // invalid text representation
		sqlState("P0001"):              true,  // raise exception in a trigger
		sqlState("40001"):              false, // serialization failure
		sqlState("40P01"):              false, // deadlock
		sqlState("42P01"):              false, // undefined table: a deployment problem, retried
		sqlState("57P01"):              false, // admin shutdown
		sqlState("08006"):              false, // connection failure
		errors.New("connection reset"): false,
		writeback.ErrBadChange:         true,
	} {
		if got := writeback.Permanent(err); got != want {
			t.Errorf("Permanent(%v) = %v, want %v", err, got, want)
		}
	}
}
