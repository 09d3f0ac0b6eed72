package invalidator_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
)

// Lookup entries (by a unique column, by a foreign key) are announced and leased by
// applications through store.Model.WithLookup, as readthrough does, and filled; the
// worker must delete exactly the entries a change's new values name (and its old
// values', under REPLICA IDENTITY FULL), under every version that announced the lookup,
// and flush the table when it cannot name them. Entries a change does not name must
// survive: that is what tells these tests from a worker that deletes everything.

// lookupEnv is a database of tables in a non-public schema, with lookup entries seeded
// in Redis the way an application leases and fills them.
type lookupEnv struct {
	*schemaEnv
	rdb          *redis.Client
	st           *store.Store
	barrier      keys.Key
	barrierModel store.Model
}

// entry is a lookup entry: a table's lookup under a version, for values as an
// application would spell them (canonicalised by kinds, the kinds the read side takes
// from the catalog's base types).
type entry struct {
	table   string // in schema shop
	version string
	lookup  keys.Lookup
	vals    []string
}

func (e entry) String() string {
	return fmt.Sprintf("%s@%s %s=%q", e.table, e.version, e.lookup, e.vals)
}

func mustLookup(t *testing.T, kind keys.LookupKind, cols ...string) keys.Lookup {
	t.Helper()
	l, err := keys.NewLookup(kind, cols...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (e *lookupEnv) space(t *testing.T, table, version string) keys.Space {
	t.Helper()
	sp, err := keys.NewSpace(e.prefix, keys.QualifiedTable("shop", table), version)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func (e *lookupEnv) key(t *testing.T, en entry) keys.Key {
	return e.space(t, en.table, en.version).LookupKey(en.lookup, en.vals...)
}

// seed leases and fills the entries (announcing their lookups), as a fill does.
func (e *lookupEnv) seed(t *testing.T, ens ...entry) {
	t.Helper()
	for _, en := range ens {
		m := store.NewModel(e.space(t, en.table, en.version), time.Hour).WithLookup(en.lookup)
		e.fill(t, m, e.key(t, en))
	}
}

func (e *lookupEnv) fill(t *testing.T, m store.Model, k keys.Key) {
	t.Helper()
	ctx := context.Background()
	ls, err := e.st.TakeLeases(ctx, m, []keys.Key{k}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ls[0].State == store.Found {
		return
	}
	if ls[0].State != store.Acquired {
		t.Fatalf("lease on %s: state %v", k, ls[0].State)
	}
	if ok, err := e.st.Fill(ctx, k, ls[0].Token, []byte("entry"), time.Hour); err != nil || !ok {
		t.Fatalf("fill %s: %v, %v", k, ok, err)
	}
}

func (e *lookupEnv) cached(t *testing.T, k keys.Key) bool {
	t.Helper()
	n, err := e.rdb.Exists(context.Background(), k.Value()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// step seeds gone and kept, runs sql, waits until the worker has handled it (it handles
// transactions in commit order, and a later one deletes the barrier row's key), and
// checks that the entries of gone were deleted and those of kept were not.
func (e *lookupEnv) step(t *testing.T, sql string, gone, kept []entry) {
	t.Helper()
	e.seed(t, gone...)
	e.seed(t, kept...)
	e.fill(t, e.barrierModel, e.barrier)
	handled := e.inv.Stats().Transactions
	e.exec(t, sql)
	e.exec(t, `UPDATE shop.barrier SET n = n + 1 WHERE id = 1`)
	// The barrier's key goes with the batch's first deletions; the entries of lookups
	// announced since the worker last read the registries go after them, before the
	// batch is counted.
	integration.Eventually(t, "the worker to handle: "+sql, func() bool {
		return !e.cached(t, e.barrier) && e.inv.Stats().Transactions > handled
	})
	for _, en := range gone {
		if e.cached(t, e.key(t, en)) {
			t.Errorf("%s: entry %s survived", sql, en)
		}
	}
	for _, en := range kept {
		if !e.cached(t, e.key(t, en)) {
			t.Errorf("%s: entry %s was deleted (the control: it names no changed value)", sql, en)
		}
	}
}

func canon(t *testing.T, k keys.Kind, s string) string {
	t.Helper()
	c, err := keys.FromText(k, s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newLookupEnv(t *testing.T) *lookupEnv {
	t.Helper()
	se := newSchemaEnv(t, "",
		`CREATE SCHEMA shop`,
		`CREATE TABLE shop.orgs (id bigint PRIMARY KEY)`,
		`INSERT INTO shop.orgs VALUES (1), (2)`,
		// The composite unique index is declared (tenant_id, handle), the columns run
		// (handle, tenant_id).
		`CREATE TABLE shop.users (id bigint PRIMARY KEY, email text UNIQUE, org_id bigint REFERENCES shop.orgs,
			handle text, tenant_id int, bio text, UNIQUE (tenant_id, handle))`,
		`CREATE DOMAIN shop.code4 AS char(4)`,
		`CREATE TYPE shop.mood AS ENUM ('happy', 'sad')`,
		`CREATE TABLE shop.things (id bigint PRIMARY KEY, token uuid UNIQUE, code char(6) UNIQUE,
			price numeric(10,2), dcode shop.code4, mood shop.mood)`,
		`CREATE TABLE shop.members (id bigint PRIMARY KEY, team_id bigint, note text)`,
		`ALTER TABLE shop.members REPLICA IDENTITY FULL`,
		`INSERT INTO shop.members VALUES (1, 1, 'n')`,
		// tag is stored out of line and uncompressed: a 3000-byte tag is TOASTed.
		`CREATE TABLE shop.docs (id bigint PRIMARY KEY, tag text, n int)`,
		`ALTER TABLE shop.docs ALTER COLUMN tag SET STORAGE EXTERNAL`,
		`INSERT INTO shop.docs VALUES (1, repeat('x', 3000), 0)`,
		`CREATE TABLE shop.events (id bigint PRIMARY KEY, kind text) PARTITION BY RANGE (id)`,
		`CREATE TABLE shop.events_1 PARTITION OF shop.events FOR VALUES FROM (0) TO (100)`,
		`CREATE TABLE shop.barrier (id int PRIMARY KEY, n int)`,
		`INSERT INTO shop.barrier VALUES (1, 0)`,
		`CREATE PUBLICATION pgcache FOR TABLE shop.users, shop.things, shop.members, shop.docs, shop.events, shop.barrier
			WITH (publish_via_partition_root = true)`,
	)
	e := &lookupEnv{schemaEnv: se, rdb: se.rdb, st: store.New(se.rdb, 5*time.Second, "lookups-test")}
	sp := e.space(t, "barrier", "v1")
	e.barrier, e.barrierModel = sp.Key("1"), store.NewModel(sp, time.Hour)
	return e
}

func TestLookupEntries(t *testing.T) {
	t.Parallel()
	e := newLookupEnv(t)
	email := mustLookup(t, keys.Unique, "email")
	org := mustLookup(t, keys.List, "org_id")
	handle := mustLookup(t, keys.Unique, "tenant_id", "handle") // in name order: handle, tenant_id
	users := func(ver string, l keys.Lookup, vals ...string) entry { return entry{"users", ver, l, vals} }
	// Announced before the worker starts, under two versions (two builds deployed).
	e.seed(t, users("v1", email, "none@x"), users("v2", email, "none@x"), users("v1", handle, "none", "0"))
	e.start(t, "shop.users", "shop.things", "shop.members", "shop.docs", "shop.events", "shop.barrier")

	t.Run("users", func(t *testing.T) {
		e.step(t, `INSERT INTO shop.users VALUES (1, 'a@x', 1, 'ann', 7, '')`,
			[]entry{users("v1", email, "a@x"), users("v2", email, "a@x"), users("v1", org, "1"), users("v2", org, "1"), users("v1", handle, "ann", "7")},
			[]entry{users("v1", email, "b@x"), users("v1", org, "2"), users("v1", handle, "ann", "8"), users("v1", handle, "7", "ann")})
		// The old value's entries are left to the check on read under the default
		// replica identity: the message does not carry them.
		e.step(t, `UPDATE shop.users SET email = 'b@x' WHERE id = 1`,
			[]entry{users("v1", email, "b@x"), users("v2", email, "b@x"), users("v1", org, "1"), users("v1", handle, "ann", "7")},
			[]entry{users("v1", email, "a@x"), users("v1", org, "2")})
		// Another column: the row may have entered its entries (an undelete, say).
		e.step(t, `UPDATE shop.users SET bio = 'hi' WHERE id = 1`,
			[]entry{users("v1", email, "b@x"), users("v2", org, "1")},
			[]entry{users("v1", email, "a@x"), users("v1", org, "2")})
		// NULL names no entry.
		e.step(t, `UPDATE shop.users SET org_id = NULL, handle = NULL WHERE id = 1`,
			[]entry{users("v1", email, "b@x")},
			[]entry{users("v1", org, "1"), users("v1", org, "2"), users("v1", handle, "ann", "7")})
		e.step(t, `DELETE FROM shop.users WHERE id = 1`,
			nil,
			[]entry{users("v1", email, "b@x"), users("v2", email, "b@x"), users("v1", org, "1")})
		e.step(t, `TRUNCATE shop.users`,
			[]entry{users("v1", email, "b@x"), users("v2", email, "z@x"), users("v1", org, "2"), users("v1", handle, "q", "1")},
			[]entry{{"things", "v1", mustLookup(t, keys.Unique, "code"), []string{"zz"}}})
	})

	t.Run("types", func(t *testing.T) {
		const token = "6F9619FF-8B86-D011-B42D-00C04FC964FF" // as a caller may spell it
		tok := mustLookup(t, keys.Unique, "token")
		code := mustLookup(t, keys.Unique, "code")
		price := mustLookup(t, keys.List, "price")
		dcode := mustLookup(t, keys.List, "dcode")
		mood := mustLookup(t, keys.List, "mood")
		things := func(l keys.Lookup, vals ...string) entry { return entry{"things", "v1", l, vals} }
		e.step(t, `INSERT INTO shop.things VALUES (1, '`+strings.ToLower(token)+`', 'ab', 5.5, 'cd', 'happy')`,
			[]entry{things(tok, canon(t, keys.UUID, token)), things(code, canon(t, keys.Char, "ab")),
				things(price, canon(t, keys.Numeric, "5.50")), things(dcode, canon(t, keys.Char, "cd")),
				things(mood, "happy")},
			[]entry{things(code, "ab2"), things(price, canon(t, keys.Numeric, "5.51")), things(mood, "sad")})
	})

	t.Run("replica identity full", func(t *testing.T) {
		// Announced only now, after the worker read the registries: it learns of the
		// lookup with the batch of the change that follows.
		team := mustLookup(t, keys.List, "team_id")
		members := func(vals ...string) entry { return entry{"members", "v1", team, vals} }
		e.step(t, `UPDATE shop.members SET team_id = 2 WHERE id = 1`,
			[]entry{members("1"), members("2")},
			[]entry{members("3")})
		e.step(t, `DELETE FROM shop.members WHERE id = 1`,
			[]entry{members("2")},
			[]entry{members("3")})
	})

	t.Run("values not in the message", func(t *testing.T) {
		tag := mustLookup(t, keys.List, "tag")
		docs := func(vals ...string) entry { return entry{"docs", "v1", tag, vals} }
		flushed := e.inv.Stats().TablesFlushed
		// The tag is TOASTed and unchanged: the message lacks it, the table goes.
		e.step(t, `UPDATE shop.docs SET n = 1 WHERE id = 1`,
			[]entry{docs(strings.Repeat("x", 3000)), docs("y")},
			nil)
		if got := e.inv.Stats().TablesFlushed; got != flushed+1 {
			t.Errorf("tables flushed: %d, want %d", got, flushed+1)
		}
		// The control: with the tag in the message, only its entry goes.
		e.step(t, `UPDATE shop.docs SET tag = 'short', n = 2 WHERE id = 1`,
			[]entry{docs("short")},
			[]entry{docs("y"), docs(strings.Repeat("x", 3000))})
		// A value longer than the decoder keeps.
		e.step(t, `INSERT INTO shop.docs VALUES (2, repeat('z', 5000), 0)`,
			[]entry{docs("y")},
			nil)
	})

	t.Run("partitioned", func(t *testing.T) {
		kind := mustLookup(t, keys.List, "kind")
		events := func(vals ...string) entry { return entry{"events", "v1", kind, vals} }
		e.step(t, `INSERT INTO shop.events_1 VALUES (1, 'click')`,
			[]entry{events("click")},
			[]entry{events("view")})
	})

	if st := e.inv.Stats(); st.LookupKeysDeleted == 0 {
		t.Errorf("stats %+v: no lookup entries counted", st)
	}
}
