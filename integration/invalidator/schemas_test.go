package invalidator_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/readthrough"
)

// The schemas real teams have, each cached by an application and changed by raw SQL
// while the worker runs: the cache must follow every change (within the lag; these
// tests wait up to integration.Eventually's bound, where a miss stays stale for ever).

type fullRow struct {
	ID int64 `gorm:"primaryKey"`
	V  string
}

func (fullRow) TableName() string { return "full_rows" }

type idxRow struct {
	ID    int64 `gorm:"primaryKey"`
	Email string
}

func (idxRow) TableName() string { return "idx_rows" }

// line's key fields are declared (OrderID, LineNo); the table's columns run
// (line_no, order_id), as a hand-written migration made them.
type line struct {
	OrderID int64 `gorm:"primaryKey;autoIncrement:false"`
	LineNo  int32 `gorm:"primaryKey;autoIncrement:false"`
	Qty     int
}

func (line) TableName() string { return "lines" }

// code has a char(8) key: Postgres pads it and prints it padded.
type code struct {
	Code string `gorm:"primaryKey"`
	V    string
}

func (code) TableName() string { return "codes" }

// token has a uuid key held in a string, which callers may spell in upper case.
type token struct {
	ID string `gorm:"primaryKey"`
	V  string
}

func (token) TableName() string { return "tokens" }

// event lives in a partitioned table.
type event struct {
	ID int64 `gorm:"primaryKey"`
	V  string
}

func (event) TableName() string { return "events" }

// schemaEnv is a database whose tables an application caches and a worker invalidates.
type schemaEnv struct {
	pg     *integration.Database
	db     *gorm.DB
	cache  *readthrough.Cache
	inv    *invalidator.Invalidator
	rdb    *redis.Client
	prefix string
	url    string // the role's URL, with the connection options of the test
}

func newSchemaEnv(t *testing.T, connOptions string, ddl ...string) *schemaEnv {
	t.Helper()
	pg := servers.Postgres(t).NewDatabase(t)
	rd := servers.Redis(t)
	e := &schemaEnv{pg: pg, prefix: rd.Prefix(t), url: pg.RoleURL}
	if connOptions != "" {
		e.url = fixture.WithOptions(t, pg.RoleURL, connOptions)
	}
	db := fixture.Open(t, e.url)
	e.db = db
	for _, sql := range ddl {
		e.exec(t, sql)
	}
	rdb := rd.Client(t)
	e.rdb = rdb
	var err error
	if e.cache, err = readthrough.New(db, rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if e.inv, err = invalidator.New(rdb, invalidator.Options{Prefix: e.prefix}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *schemaEnv) exec(t *testing.T, sql string) {
	t.Helper()
	if err := e.db.Exec(sql).Error; err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// start runs the worker's stream of tables into the invalidator until stop or the end
// of the test.
func (e *schemaEnv) start(t *testing.T, tables ...string) (stop func()) {
	t.Helper()
	_, stop = runStream(t, e.url, cdc.Options{
		Slot: "slot_" + e.pg.Name, Publication: "pgcache", Tables: tables, StatusInterval: 100 * time.Millisecond,
	}, e.inv)
	return stop
}

func register[T any](t *testing.T, e *schemaEnv) *readthrough.Repository[T] {
	t.Helper()
	r, err := readthrough.Register[T](e.cache, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// follows caches row id (or its absence), runs sql, and waits until Get agrees with
// want (nil: the row is absent).
func follows[T comparable](t *testing.T, e *schemaEnv, repo *readthrough.Repository[T], id any, sql string, want *T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, _, err := repo.Get(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, _, err := repo.Get(ctx, id); err != nil { // a hit now
		t.Fatal(err)
	}
	e.exec(t, sql)
	var got T
	var ok bool
	integration.Eventually(t, "the cache to follow: "+sql, func() bool {
		var err error
		if got, ok, err = repo.Get(ctx, id); err != nil {
			t.Fatal(err)
		}
		return want == nil && !ok || want != nil && ok && got == *want
	})
}

// identityDDL makes full_rows, of replica identity FULL, and idx_rows, whose replica
// identity is a unique index of its columns in another order than the primary key's.
var identityDDL = []string{
	`CREATE TABLE full_rows (id bigint PRIMARY KEY, v text)`,
	`ALTER TABLE full_rows REPLICA IDENTITY FULL`,
	`CREATE TABLE idx_rows (id bigint NOT NULL, email text NOT NULL, PRIMARY KEY (id))`,
	`CREATE UNIQUE INDEX idx_rows_ident ON idx_rows (email, id)`,
	`ALTER TABLE idx_rows REPLICA IDENTITY USING INDEX idx_rows_ident`,
}

func TestReplicaIdentities(t *testing.T) {
	t.Parallel()
	e := newSchemaEnv(t, "", append(slices.Clone(identityDDL),
		`INSERT INTO full_rows VALUES (1, 'a'), (2, 'b')`,
		`INSERT INTO idx_rows VALUES (1, 'a@x'), (2, 'b@x')`,
	)...)
	full := register[fullRow](t, e)
	idx := register[idxRow](t, e)
	e.start(t, "full_rows", "idx_rows")

	follows(t, e, full, int64(1), `UPDATE full_rows SET v = 'a2' WHERE id = 1`, &fullRow{1, "a2"})
	follows(t, e, full, int64(1), `UPDATE full_rows SET id = 10 WHERE id = 1`, nil)
	follows(t, e, full, int64(2), `DELETE FROM full_rows WHERE id = 2`, nil)
	follows(t, e, full, int64(3), `INSERT INTO full_rows VALUES (3, 'c')`, &fullRow{3, "c"})

	follows(t, e, idx, int64(1), `UPDATE idx_rows SET email = 'a2@x' WHERE id = 1`, &idxRow{1, "a2@x"})
	follows(t, e, idx, int64(2), `DELETE FROM idx_rows WHERE id = 2`, nil)
	follows(t, e, idx, int64(3), `INSERT INTO idx_rows VALUES (3, 'c@x')`, &idxRow{3, "c@x"})
}

func TestKeySpellings(t *testing.T) {
	t.Parallel()
	const id = "6f9619ff-8b86-d011-b42d-00c04fc964ff"
	upper := strings.ToUpper(id)
	e := newSchemaEnv(t, "",
		`CREATE TABLE lines (line_no int NOT NULL, order_id bigint NOT NULL, qty int, PRIMARY KEY (order_id, line_no))`,
		`CREATE TABLE codes (code char(8) PRIMARY KEY, v text)`,
		`CREATE TABLE tokens (id uuid PRIMARY KEY, v text)`,
		`INSERT INTO lines VALUES (2, 1, 5)`,
		`INSERT INTO codes VALUES ('abc', 'a')`,
		`INSERT INTO tokens VALUES ('`+id+`', 'a')`,
	)
	lines := register[line](t, e)
	codes := register[code](t, e)
	tokens := register[token](t, e)
	e.start(t, "lines", "codes", "tokens")

	follows(t, e, lines, []any{int64(1), int32(2)}, `UPDATE lines SET qty = 6`, &line{1, 2, 6})
	follows(t, e, codes, "abc", `UPDATE codes SET v = 'a2'`, &code{"abc     ", "a2"})
	follows(t, e, tokens, upper, `UPDATE tokens SET v = 'a2'`, &token{id, "a2"})

	// GetMany finds the rows whatever the caller's spelling, and caches no absence.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 2 {
		if got, err := codes.GetMany(ctx, "abc"); err != nil || len(got) != 1 {
			t.Fatalf("GetMany(abc) = %+v, %v; want the row", got, err)
		}
		if got, err := tokens.GetMany(ctx, upper); err != nil || len(got) != 1 {
			t.Fatalf("GetMany(upper-case uuid) = %+v, %v; want the row", got, err)
		}
	}
}

// TestSearchPath: the application and the worker reach the table through
// search_path=app, and the model leaves its schema to it.
func TestSearchPath(t *testing.T) {
	t.Parallel()
	e := newSchemaEnv(t, "-c search_path=app",
		`CREATE SCHEMA app`,
		`CREATE TABLE app.full_rows (id bigint PRIMARY KEY, v text)`,
		`INSERT INTO app.full_rows VALUES (1, 'a'), (2, 'b')`,
	)
	repo := register[fullRow](t, e)
	stop := e.start(t, "full_rows")
	follows(t, e, repo, int64(1), `UPDATE full_rows SET v = 'a2' WHERE id = 1`, &fullRow{1, "a2"})

	// A gap (the slot dropped while the worker was away) flushes the table in app.
	stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, _, err := repo.Get(ctx, int64(2)); err != nil {
		t.Fatal(err)
	}
	// The server's walsender may outlive the stream's Run by a moment: the slot is
	// free to drop once it ends.
	integration.Eventually(t, "the slot to be dropped", func() bool {
		return e.db.Exec(`SELECT pg_drop_replication_slot('slot_`+e.pg.Name+`')`).Error == nil
	})
	e.exec(t, `UPDATE full_rows SET v = 'changed unseen' WHERE id = 2`)
	e.start(t, "full_rows")
	if got, _, _ := repo.Get(ctx, int64(2)); got.V != "changed unseen" {
		t.Fatalf("after the gap, Get = %+v; want the row changed while no slot existed", got)
	}
}

// TestPartitions: a partitioned table, in a publication made with
// publish_via_partition_root (the worker's role owns it, so the worker alters it), and
// partition maintenance.
func TestPartitions(t *testing.T) {
	t.Parallel()
	e := newSchemaEnv(t, "",
		`CREATE TABLE events (id bigint PRIMARY KEY, v text) PARTITION BY RANGE (id)`,
		`CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (100)`,
		`CREATE TABLE events_2 PARTITION OF events FOR VALUES FROM (100) TO (200)`,
		`CREATE TABLE events_3 PARTITION OF events FOR VALUES FROM (200) TO (300)`,
		`INSERT INTO events VALUES (1, 'a'), (2, 'b'), (101, 'c'), (201, 'd')`,
		`CREATE TABLE events_4 (id bigint PRIMARY KEY, v text)`,
		`INSERT INTO events_4 VALUES (301, 'e')`,
		`CREATE PUBLICATION pgcache FOR TABLE events WITH (publish_via_partition_root = true)`,
	)
	repo := register[event](t, e)
	e.start(t, "events")

	follows(t, e, repo, int64(1), `UPDATE events SET v = 'a2' WHERE id = 1`, &event{1, "a2"})
	follows(t, e, repo, int64(2), `DELETE FROM events_1 WHERE id = 2`, nil)
	follows(t, e, repo, int64(101), `TRUNCATE events_2`, nil)
	follows(t, e, repo, int64(201), `ALTER TABLE events DETACH PARTITION events_3`, nil)
	follows(t, e, repo, int64(301), `ALTER TABLE events ATTACH PARTITION events_4 FOR VALUES FROM (300) TO (400)`, &event{301, "e"})
	// A partition attached since the stream began: its rows' changes are its table's.
	follows(t, e, repo, int64(301), `UPDATE events SET v = 'e2' WHERE id = 301`, &event{301, "e2"})
	follows(t, e, repo, int64(201), `ALTER TABLE events ATTACH PARTITION events_3 FOR VALUES FROM (200) TO (300)`, &event{201, "d"})
	follows(t, e, repo, int64(201), `DROP TABLE events_3`, nil)
}

// TestTransactionPastMaxChanges: a transaction past cdc.Options.MaxTxChanges invalidates its
// tables whole.
func TestTransactionPastMaxChanges(t *testing.T) {
	t.Parallel()
	e := newSchemaEnv(t, "",
		`CREATE TABLE full_rows (id bigint PRIMARY KEY, v text)`,
		`INSERT INTO full_rows SELECT g, 'v0' FROM generate_series(1, 2000) g`,
	)
	repo := register[fullRow](t, e)
	runStream(t, e.url, cdc.Options{
		Slot: "slot_" + e.pg.Name, Publication: "pgcache", Tables: []string{"full_rows"},
		StatusInterval: 100 * time.Millisecond, MaxTxChanges: 100,
	}, e.inv)
	follows(t, e, repo, int64(7), `UPDATE full_rows SET v = 'backfilled'`, &fullRow{7, "backfilled"})
	if st := e.inv.Stats(); st.TablesFlushed == 0 {
		t.Errorf("invalidator stats %+v: want the table flushed whole", st)
	}
}
