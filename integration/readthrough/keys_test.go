package readthrough_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/readthrough"
)

// OrderItem has a composite (uuid, int) key in a mixed-case, schema-qualified table.
type OrderItem struct {
	OrderID uuid.UUID `gorm:"primaryKey;type:uuid"`
	Line    int32     `gorm:"primaryKey;autoIncrement:false"`
	SKU     string
}

func (OrderItem) TableName() string { return "Sales.Order Items" }

// Tag has a text key.
type Tag struct {
	Code  string `gorm:"primaryKey"`
	Label string
}

// Price has a numeric key.
type Price struct {
	Amount string `gorm:"primaryKey;type:numeric(10,2)"`
	Label  string
}

// TestKeysAgreeWithChangeSide: the key the read side builds from Go ids equals the key
// the change side builds from Postgres' text output of the same row, for composite,
// uuid, text (separators, braces, unicode, empty) and numeric keys.
func TestKeysAgreeWithChangeSide(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	e.exec(t, `CREATE SCHEMA "Sales"`)
	if err := e.db.AutoMigrate(&OrderItem{}, &Tag{}, &Price{}); err != nil {
		t.Fatal(err)
	}
	c := e.cache(t, e.db)
	items, err := readthrough.Register[OrderItem](c, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tags, err := readthrough.Register[Tag](c, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	prices, err := readthrough.Register[Price](c, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// changeSideKey builds the key as the invalidator does: from the table's schema and
	// name and the key columns' text output and type OIDs.
	changeSideKey := func(schema, table, version, query string) string {
		t.Helper()
		rows, err := e.db.Raw(query).Rows()
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		cols, _ := rows.ColumnTypes()
		if !rows.Next() {
			t.Fatalf("%s: no row", query)
		}
		texts := make([]string, len(cols)/2)
		oids := make([]uint32, len(cols)/2)
		dest := make([]any, len(cols))
		for i := range texts {
			dest[2*i], dest[2*i+1] = &texts[i], &oids[i]
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatal(err)
		}
		names := make([]string, len(texts))
		for i := range names {
			names[i] = cols[2*i].Name()
		}
		canon := make([]string, len(texts))
		for j, i := range keys.Order(names) {
			if canon[j], err = keys.FromText(keys.KindOf(oids[i]), texts[i]); err != nil {
				t.Fatal(err)
			}
		}
		space, err := keys.NewSpace(e.prefix, keys.QualifiedTable(schema, table), version)
		if err != nil {
			t.Fatal(err)
		}
		return space.Key(canon...).Value()
	}

	order := uuid.MustParse("6F9619FF-8B86-D011-B42D-00C04FC964FF")
	if err := e.db.Create(&OrderItem{OrderID: order, Line: 3, SKU: "x"}).Error; err != nil {
		t.Fatal(err)
	}
	got, err := items.Key([]any{order, int32(3)})
	if err != nil {
		t.Fatal(err)
	}
	want := changeSideKey("Sales", "Order Items", items.Version(),
		`SELECT order_id::text, pg_typeof(order_id)::oid, line::text, pg_typeof(line)::oid FROM "Sales"."Order Items"`)
	if item, ok, err := items.Get(ctx, []any{order, int32(3)}); err != nil || !ok || item.SKU != "x" {
		t.Fatalf("Get composite = %+v, %v, %v", item, ok, err)
	}
	if got != want {
		t.Errorf("composite key: read side %q, change side %q", got, want)
	}

	for _, code := range []string{"plain", "a,b", "{braces}", "pipe|colon:percent%", "ünïcødé ✓", "", `quote"back\slash`, "x}:v"} {
		if err := e.db.Create(&Tag{Code: code, Label: "l"}).Error; err != nil {
			t.Fatal(err)
		}
		got, err := tags.Key(code)
		if err != nil {
			t.Fatal(err)
		}
		want := changeSideKey("public", "tags", tags.Version(),
			`SELECT code::text, pg_typeof(code)::oid FROM tags WHERE code = '`+strings.ReplaceAll(code, "'", "''")+`'`)
		if got != want {
			t.Errorf("text key %q: read side %q, change side %q", code, got, want)
		}
		if tag, ok, err := tags.Get(ctx, code); err != nil || !ok || tag.Code != code {
			t.Fatalf("Get %q = %+v, %v, %v", code, tag, ok, err)
		}
	}

	e.exec(t, `INSERT INTO prices (amount, label) VALUES (12.5, 'twelve and a half')`)
	got, err = prices.Key("12.5")
	if err != nil {
		t.Fatal(err)
	}
	// Postgres prints numeric(10,2) as 12.50; both sides canonicalise to one key.
	if want := changeSideKey("public", "prices", prices.Version(), `SELECT amount::text, pg_typeof(amount)::oid FROM prices`); got != want {
		t.Errorf("numeric key: read side %q, change side %q", got, want)
	}
}

// modelDB is a database with the tables of the models these tests register: Register
// reads each table's primary key from the catalog.
func modelDB(t *testing.T) *gorm.DB {
	t.Helper()
	e := newEnv(t)
	e.exec(t, `CREATE SCHEMA "Sales"`)
	if err := e.db.AutoMigrate(&OrderItem{}); err != nil {
		t.Fatal(err)
	}
	e.exec(t, `CREATE TABLE float_keys (id float8 PRIMARY KEY)`)
	e.exec(t, `CREATE TABLE other_keys (id bigint, tenant bigint, PRIMARY KEY (tenant, id))`)
	return e.db
}

// otherKey declares a primary key its table does not have.
type otherKey struct {
	ID     int64 `gorm:"primaryKey"`
	Tenant int64
}

// missingTable has no table.
type missingTable struct {
	ID int64 `gorm:"primaryKey"`
}

// WidgetV2 is Widget with one more column: a new struct, so a new schema version.
type WidgetV2 struct {
	ID     int64 `gorm:"primaryKey"`
	Name   string
	Price  int
	Colour string
}

func (WidgetV2) TableName() string { return "widgets" }

func TestSchemaVersion(t *testing.T) {
	t.Parallel()
	db := modelDB(t)
	version := func(register func(c *readthrough.Cache) (string, error)) string {
		t.Helper()
		c, err := readthrough.New(db, e0(), readthrough.Options{})
		if err != nil {
			t.Fatal(err)
		}
		v, err := register(c)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v1 := version(func(c *readthrough.Cache) (string, error) {
		r, err := readthrough.Register[Widget](c, readthrough.ModelOptions{})
		return r.Version(), err
	})
	v1again := version(func(c *readthrough.Cache) (string, error) {
		r, err := readthrough.Register[Widget](c, readthrough.ModelOptions{})
		return r.Version(), err
	})
	v2 := version(func(c *readthrough.Cache) (string, error) {
		r, err := readthrough.Register[WidgetV2](c, readthrough.ModelOptions{})
		return r.Version(), err
	})
	msgpack := version(func(c *readthrough.Cache) (string, error) {
		r, err := readthrough.Register[Widget](c, readthrough.ModelOptions{Codec: readthrough.Msgpack{}})
		return r.Version(), err
	})
	pinned := version(func(c *readthrough.Cache) (string, error) {
		r, err := readthrough.Register[WidgetV2](c, readthrough.ModelOptions{Version: "v7"})
		return r.Version(), err
	})
	if v1 != v1again {
		t.Errorf("same struct, versions %q and %q", v1, v1again)
	}
	if v1 == v2 {
		t.Errorf("adding a field kept version %q: old bytes would decode into the new struct", v1)
	}
	if v1 == msgpack {
		t.Errorf("switching codec kept version %q", v1)
	}
	if pinned != "v7" {
		t.Errorf("Version override gave %q", pinned)
	}
	jsonCodec := version(func(c *readthrough.Cache) (string, error) {
		r, err := readthrough.Register[Widget](c, readthrough.ModelOptions{Codec: readthrough.JSON{}})
		return r.Version(), err
	})
	// Widget's versions when a row was cached as the struct through encoding/json or
	// msgpack: column records must never be read from those keys, nor those bytes from
	// these keys.
	for _, v := range []string{v1, msgpack, jsonCodec} {
		if v == "s3d593c345a" || v == "sc54e764a1e" {
			t.Errorf("version %q is the one of the struct encoding: a deploy would read its entries as column records", v)
		}
	}
}

type noKey struct{ Name string }
type floatKey struct {
	ID float64 `gorm:"primaryKey"`
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	db := modelDB(t)
	c, err := readthrough.New(db, e0(), readthrough.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readthrough.New(nil, e0(), readthrough.Options{}); !errors.Is(err, readthrough.ErrConfig) {
		t.Errorf("New without a db: %v", err)
	}
	if _, err := readthrough.New(db, e0(), readthrough.Options{Prefix: "bad{prefix}"}); err != nil {
		// the prefix is checked when the first model registers
		t.Errorf("New: %v", err)
	}
	for name, tc := range map[string]struct {
		register func() error
		want     string
	}{
		"fence shorter than load": {func() error {
			_, err := readthrough.Register[Widget](c, readthrough.ModelOptions{LoadTimeout: 5 * time.Second, FenceDuration: time.Second})
			return err
		}, "FenceDuration"},
		"jitter above one": {func() error {
			_, err := readthrough.Register[Widget](c, readthrough.ModelOptions{TTLJitter: 2})
			return err
		}, "TTLJitter"},
		"no primary key": {func() error {
			_, err := readthrough.Register[noKey](c, readthrough.ModelOptions{})
			return err
		}, "no primary key"},
		"float primary key": {func() error {
			_, err := readthrough.Register[floatKey](c, readthrough.ModelOptions{})
			return err
		}, "use an integer, text"},
		"primary key unlike the table's": {func() error {
			_, err := readthrough.Register[otherKey](c, readthrough.ModelOptions{})
			return err
		}, "primary key is (tenant, id)"},
		"no table": {func() error {
			_, err := readthrough.Register[missingTable](c, readthrough.ModelOptions{})
			return err
		}, "before Register"},
		"bad version": {func() error {
			_, err := readthrough.Register[Widget](c, readthrough.ModelOptions{Version: "v 1"})
			return err
		}, "version"},
		"bad prefix": {func() error {
			bad, _ := readthrough.New(db, e0(), readthrough.Options{Prefix: "bad{prefix}"})
			_, err := readthrough.Register[Widget](bad, readthrough.ModelOptions{})
			return err
		}, "prefix"},
	} {
		err := tc.register()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, tc.want)
		}
	}
	if _, err := readthrough.Register[Widget](c, readthrough.ModelOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := readthrough.Register[Widget](c, readthrough.ModelOptions{}); !errors.Is(err, readthrough.ErrRegistered) {
		t.Errorf("second Register: %v, want ErrRegistered", err)
	}
	repo, _ := readthrough.Register[OrderItem](c, readthrough.ModelOptions{})
	if _, err := repo.Key(uuid.New()); err == nil || !strings.Contains(err.Error(), "composite") {
		t.Errorf("single value for a composite key: %v", err)
	}
}
