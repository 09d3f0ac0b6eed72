package cdc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/testhooks"
)

var servers integration.Shared

func TestMain(m *testing.M) { os.Exit(servers.Run(m)) }

// wait bounds every wait for the stream in these tests.
const wait = 60 * time.Second

type gapCall struct {
	tables []string
	reason string
}

// recorder is a Handler that passes what it is given to the test. fail, when set, may
// refuse a transaction; refused ones go to failed.
type recorder struct {
	txs    chan *cdc.Tx
	gaps   chan gapCall
	failed chan *cdc.Tx
	fail   func(*cdc.Tx) error
}

func newRecorder() *recorder {
	return &recorder{txs: make(chan *cdc.Tx, 1000), gaps: make(chan gapCall, 100), failed: make(chan *cdc.Tx, 1000)}
}

func (r *recorder) Gap(ctx context.Context, tables []string, reason string) error {
	r.gaps <- gapCall{tables, reason}
	return nil
}

func (r *recorder) Handle(ctx context.Context, tx *cdc.Tx) error {
	if r.fail != nil {
		if err := r.fail(tx); err != nil {
			r.failed <- tx
			return err
		}
	}
	r.txs <- tx
	return nil
}

// next returns the next transaction handled.
func (r *recorder) next(t *testing.T) *cdc.Tx {
	t.Helper()
	select {
	case tx := <-r.txs:
		return tx
	case <-time.After(wait):
		t.Fatalf("no transaction within %v", wait)
		return nil
	}
}

func (r *recorder) nextGap(t *testing.T) gapCall {
	t.Helper()
	select {
	case g := <-r.gaps:
		return g
	case <-time.After(wait):
		t.Fatalf("no Gap call within %v", wait)
		return gapCall{}
	}
}

func (r *recorder) noGap(t *testing.T) {
	t.Helper()
	select {
	case g := <-r.gaps:
		t.Fatalf("unexpected Gap(%q, %q)", g.tables, g.reason)
	default:
	}
}

// testLogger sends the stream's logs to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func fastOptions(t *testing.T, slot string, tables ...string) cdc.Options {
	return cdc.Options{
		Slot:           slot,
		Publication:    "pgcache",
		Tables:         tables,
		StatusInterval: 100 * time.Millisecond,
		MinBackoff:     50 * time.Millisecond,
		MaxBackoff:     500 * time.Millisecond,
		Logger:         testLogger(t),
	}
}

// running is a Stream whose Run runs in a goroutine of the test.
type running struct {
	*cdc.Stream
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func start(t *testing.T, connURL string, opts cdc.Options, h cdc.Handler) *running {
	t.Helper()
	return startHooked(t, connURL, opts, h, nil)
}

// startHooked is start with the stream's test hooks (nil for none).
func startHooked(t *testing.T, connURL string, opts cdc.Options, h cdc.Handler, hooks *testhooks.CDC) *running {
	t.Helper()
	s, err := cdc.NewStream(connURL, opts, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testhooks.WithCDC(context.Background(), hooks))
	r := &running{Stream: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and returns what it returned.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(wait):
			r.err = errors.New("Run did not return after its context was cancelled")
		}
	})
	return r.err
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", wait, what)
		}
		<-tick.C
	}
}

func (r *running) waitConnected(t *testing.T) {
	t.Helper()
	waitFor(t, "the stream to connect", func() bool {
		select {
		case err := <-r.done:
			t.Fatalf("Run returned %v", err)
		default:
		}
		return r.Stats().Connected
	})
}

func connect(t *testing.T, connURL string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec(t *testing.T, conn *pgx.Conn, sqls ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for _, sql := range sqls {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// confirmedFlush returns the slot's confirmed position as Postgres has it.
func confirmedFlush(t *testing.T, conn *pgx.Conn, slot string) cdc.LSN {
	t.Helper()
	return slotLSN(t, conn, slot, "confirmed_flush_lsn")
}

// slotLSN returns the slot's column of pg_replication_slots, an LSN.
func slotLSN(t *testing.T, conn *pgx.Conn, slot, column string) cdc.LSN {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var s string
	if err := conn.QueryRow(ctx, `SELECT `+column+`::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&s); err != nil {
		t.Fatalf("%s of %s: %v", column, slot, err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// slotName gives each test a slot of its own: slots are per server, not per database.
func slotName(db *integration.Database, suffix string) string {
	return "s_" + db.Name + "_" + suffix
}

const (
	orderA = "0e6f3f4c-1d2b-4a5e-8f70-9a1b2c3d4e5f"
	tagKey = `a,b "c" ü`
)

var kindTables = []string{"items", "public.tags", "Sales.Order Items"}

// keys renders key values as describe does.
func keys(vals ...string) string { return fmt.Sprintf("%q", vals) }

// TestChangeKinds checks every kind of change on three key shapes, connected as a
// superuser and as the least-privileged role.
func TestChangeKinds(t *testing.T) {
	t.Parallel()
	for _, as := range []string{"superuser", "replication role"} {
		t.Run(as, func(t *testing.T) {
			t.Parallel()
			db := servers.Postgres(t).NewDatabase(t)
			connURL := db.URL
			if as == "replication role" {
				connURL = db.RoleURL
			}
			conn := connect(t, connURL) // the tables belong to the role that streams
			exec(t, conn,
				`CREATE TABLE items (id bigint PRIMARY KEY, name text)`,
				`CREATE TABLE tags (name text PRIMARY KEY, n int)`,
				`CREATE SCHEMA "Sales"`,
				`CREATE TABLE "Sales"."Order Items" (order_id uuid, qty int, line int, PRIMARY KEY (order_id, line))`,
			)
			rec := newRecorder()
			r := start(t, connURL, fastOptions(t, slotName(db, "kinds"), kindTables...), rec)
			// Gap names the tables as the catalog does, schema included.
			resolved := []string{"public.items", "public.tags", "Sales.Order Items"}
			if g := rec.nextGap(t); g.reason != cdc.GapSlotCreated || !reflect.DeepEqual(g.tables, resolved) {
				t.Fatalf("Gap(%q, %q), want (%q, %q)", g.tables, g.reason, resolved, cdc.GapSlotCreated)
			}
			r.waitConnected(t)

			exec(t, conn,
				`BEGIN`,
				`INSERT INTO items VALUES (1, 'bolt')`,
				`INSERT INTO tags VALUES ('`+tagKey+`', 1)`,
				`INSERT INTO "Sales"."Order Items" VALUES ('`+orderA+`', 5, 1)`,
				`COMMIT`,
				`UPDATE items SET name = 'nut' WHERE id = 1`,
				`UPDATE items SET id = 2 WHERE id = 1`,
				`UPDATE "Sales"."Order Items" SET line = 2`,
				`UPDATE "Sales"."Order Items" SET qty = 6`,
				`DELETE FROM tags`,
				`DELETE FROM "Sales"."Order Items"`,
				`BEGIN`,
				`INSERT INTO items VALUES (3, 'washer')`,
				`DELETE FROM items WHERE id = 2`,
				`COMMIT`,
				`TRUNCATE items, tags`,
			)
			order := func(line string) string { return keys(orderA, line) }
			want := [][]string{
				{`insert public.items ` + keys("1"), `insert public.tags ` + keys(tagKey), `insert Sales.Order Items ` + order("1")},
				{`update public.items ` + keys("1")},
				{`update public.items ` + keys("2") + ` from ` + keys("1")},
				{`update Sales.Order Items ` + order("2") + ` from ` + order("1")},
				{`update Sales.Order Items ` + order("2")},
				{`delete public.tags ` + keys(tagKey)},
				{`delete Sales.Order Items ` + order("2")},
				{`insert public.items ` + keys("3"), `delete public.items ` + keys("2")},
				{`truncate public.items []`, `truncate public.tags []`},
			}
			var last cdc.LSN
			changes := 0
			for i, w := range want {
				changes += len(w)
				tx := rec.next(t)
				got := make([]string, len(tx.Changes))
				for j, c := range tx.Changes {
					got[j] = c.String()
				}
				if !reflect.DeepEqual(got, w) {
					t.Fatalf("transaction %d:\n%s\nwant:\n%s", i, strings.Join(got, "\n"), strings.Join(w, "\n"))
				}
				if tx.EndLSN <= last || tx.CommitLSN >= tx.EndLSN || tx.CommitTime.IsZero() || tx.XID == 0 {
					t.Errorf("transaction %d: xid %d commit %s end %s time %v after end %s", i, tx.XID, tx.CommitLSN, tx.EndLSN, tx.CommitTime, last)
				}
				last = tx.EndLSN
			}
			waitFor(t, "Stats to count the transactions", func() bool {
				st := r.Stats()
				return st.Transactions == uint64(len(want)) && st.Changes == uint64(changes) && st.ConfirmedLSN >= last && st.ReceivedLSN >= last
			})
			if err := r.stop(t); err != nil {
				t.Fatalf("Run returned %v after its context was cancelled, want nil", err)
			}
		})
	}
}

// TestAtLeastOnce checks that only handled transactions are confirmed.
func TestAtLeastOnce(t *testing.T) {
	t.Parallel()
	db := servers.Postgres(t).NewDatabase(t)
	conn := connect(t, db.URL)
	exec(t, conn, `CREATE TABLE items (id bigint PRIMARY KEY)`)
	slot := slotName(db, "alo")
	opts := fastOptions(t, slot, "items")
	keyOf := func(tx *cdc.Tx) string { return tx.Changes[0].Key[0] }

	// The handler fails transaction 2 once: it is delivered again.
	rec := newRecorder()
	var failedOnce bool
	rec.fail = func(tx *cdc.Tx) error {
		if keyOf(tx) == "2" && !failedOnce {
			failedOnce = true
			return errors.New("redis is down")
		}
		return nil
	}
	r := start(t, db.URL, opts, rec)
	r.waitConnected(t)
	exec(t, conn, `INSERT INTO items VALUES (1)`, `INSERT INTO items VALUES (2)`, `INSERT INTO items VALUES (3)`)
	var handled []string
	var last *cdc.Tx
	for !slices.Contains(handled, "3") {
		last = rec.next(t)
		handled = append(handled, keyOf(last))
	}
	// Transaction 1 may come twice (the failure can precede its confirmation), but
	// 2 comes after its failure, and nothing comes out of order.
	if got := slices.Compact(slices.Clone(handled)); !reflect.DeepEqual(got, []string{"1", "2", "3"}) && !reflect.DeepEqual(got, []string{"1", "2", "1", "2", "3"}) {
		t.Fatalf("handled %q, want 1, 2, 3 with only redeliveries after the failure", handled)
	}
	if len(rec.failed) != 1 || r.Stats().Reconnects == 0 {
		t.Fatalf("%d failures, %d reconnects; want 1 failure and a reconnect", len(rec.failed), r.Stats().Reconnects)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	// The final status update confirmed the last transaction handled.
	waitFor(t, "confirmed_flush_lsn to reach "+last.EndLSN.String(), func() bool { return confirmedFlush(t, conn, slot) >= last.EndLSN })

	// A new Stream on the slot: nothing handled comes again. Transaction 5 is refused
	// until the stream stops.
	rec = newRecorder()
	rec.fail = func(tx *cdc.Tx) error {
		if keyOf(tx) == "5" {
			return errors.New("redis is down")
		}
		return nil
	}
	r = start(t, db.URL, opts, rec)
	r.waitConnected(t)
	exec(t, conn, `INSERT INTO items VALUES (4)`)
	if tx := rec.next(t); keyOf(tx) != "4" {
		t.Fatalf("first transaction of the new stream has key %s, want 4 (1-3 were handled)", keyOf(tx))
	}
	exec(t, conn, `INSERT INTO items VALUES (5)`)
	select {
	case <-rec.failed:
	case <-time.After(wait):
		t.Fatal("transaction 5 never reached the handler")
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if len(rec.txs) != 0 {
		t.Fatalf("%d transactions handled after 4", len(rec.txs))
	}

	// Received and refused is not handled: the next Stream gets transaction 5.
	rec = newRecorder()
	r = start(t, db.URL, opts, rec)
	if tx := rec.next(t); keyOf(tx) != "5" {
		t.Fatalf("first transaction after the refusal has key %s, want 5", keyOf(tx))
	}
	rec.noGap(t)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestGap checks when the handler is told that changes may have been missed.
func TestGap(t *testing.T) {
	t.Parallel()
	db := servers.Postgres(t).NewDatabase(t)
	conn := connect(t, db.URL)
	exec(t, conn, `CREATE TABLE items (id bigint PRIMARY KEY)`, `CREATE TABLE extra (id bigint PRIMARY KEY)`)
	slot := slotName(db, "gap")
	opts := fastOptions(t, slot, "items")
	runOnce := func(opts cdc.Options, key string) *recorder {
		t.Helper()
		rec := newRecorder()
		r := start(t, db.URL, opts, rec)
		r.waitConnected(t)
		exec(t, conn, `INSERT INTO items VALUES (`+key+`)`)
		if tx := rec.next(t); tx.Changes[0].Key[0] != key {
			t.Fatalf("got key %s, want %s", tx.Changes[0].Key[0], key)
		}
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
		return rec
	}

	rec := runOnce(opts, "1")
	if g := rec.nextGap(t); g.reason != cdc.GapSlotCreated || !reflect.DeepEqual(g.tables, []string{"public.items"}) {
		t.Fatalf("first run: Gap(%q, %q), want ([public.items], %q)", g.tables, g.reason, cdc.GapSlotCreated)
	}
	rec.noGap(t)

	rec = runOnce(opts, "2")
	rec.noGap(t)

	// The walsender of the stopped stream lets go of the slot a moment after Run returns.
	waitFor(t, "the slot to be dropped", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot)
		return err == nil
	})
	rec = runOnce(opts, "3")
	if g := rec.nextGap(t); g.reason != cdc.GapSlotCreated {
		t.Fatalf("after the slot was dropped: Gap(%q, %q), want %q", g.tables, g.reason, cdc.GapSlotCreated)
	}

	opts.Tables = []string{"items", "extra"}
	rec = runOnce(opts, "4")
	if g := rec.nextGap(t); g.reason != cdc.GapTableAdded || !reflect.DeepEqual(g.tables, []string{"public.extra"}) {
		t.Fatalf("after adding a table: Gap(%q, %q), want ([public.extra], %q)", g.tables, g.reason, cdc.GapTableAdded)
	}
	rec.noGap(t)

	exec(t, conn, `DROP PUBLICATION pgcache`)
	rec = runOnce(opts, "5")
	if g := rec.nextGap(t); g.reason != cdc.GapPublicationCreated || !reflect.DeepEqual(g.tables, []string{"public.items", "public.extra"}) {
		t.Fatalf("after the publication was dropped: Gap(%q, %q), want ([public.items public.extra], %q)", g.tables, g.reason, cdc.GapPublicationCreated)
	}
}

// TestIdleAdvances checks that WAL written outside the published tables does not stay
// pinned by the slot.
func TestIdleAdvances(t *testing.T) {
	t.Parallel()
	db := servers.Postgres(t).NewDatabase(t)
	conn := connect(t, db.URL)
	exec(t, conn, `CREATE TABLE items (id bigint PRIMARY KEY)`, `CREATE TABLE unpublished (id bigint PRIMARY KEY)`)
	slot := slotName(db, "idle")
	rec := newRecorder()
	r := start(t, db.URL, fastOptions(t, slot, "items"), rec)
	r.waitConnected(t)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var before string
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	mark, err := pglogrepl.ParseLSN(before)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		exec(t, conn, fmt.Sprintf(`INSERT INTO unpublished VALUES (%d)`, i))
	}
	waitFor(t, "confirmed_flush_lsn to pass "+mark.String(), func() bool { return confirmedFlush(t, conn, slot) > mark })
	if len(rec.txs) != 0 {
		t.Fatalf("the handler got %d transactions of an unpublished table", len(rec.txs))
	}
}

// TestFatalErrors checks that what retrying cannot fix is returned at once, saying why.
func TestFatalErrors(t *testing.T) {
	t.Parallel()

	runErr := func(t *testing.T, connURL string, opts cdc.Options) error {
		t.Helper()
		s, err := cdc.NewStream(connURL, opts, newRecorder())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		err = s.Run(ctx)
		if ctx.Err() != nil {
			t.Fatalf("Run kept retrying until the deadline: %v", err)
		}
		if !cdc.IsFatal(err) {
			t.Fatalf("Run returned %v, want a fatal error", err)
		}
		t.Log(err)
		return err
	}

	t.Run("wal_level replica", func(t *testing.T) {
		t.Parallel()
		pg := integration.NewPostgres(t, integration.PostgresOptions{Settings: map[string]string{"wal_level": "replica"}})
		err := runErr(t, pg.URL(), fastOptions(t, "s_replica", "t"))
		if !errors.Is(err, cdc.ErrWalLevel) || !strings.Contains(err.Error(), "wal_level=logical") {
			t.Fatalf("err %v, want ErrWalLevel saying to set wal_level=logical", err)
		}
	})

	t.Run("role without REPLICATION", func(t *testing.T) {
		t.Parallel()
		db := servers.Postgres(t).NewDatabase(t)
		conn := connect(t, db.URL)
		role := "norepl_" + db.Name
		exec(t, conn, `CREATE ROLE `+role+` LOGIN PASSWORD 'pw'`, `CREATE TABLE items (id bigint PRIMARY KEY)`)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			if _, err := conn.Exec(ctx, `DROP ROLE `+role); err != nil {
				t.Errorf("drop role: %v", err)
			}
		})
		u, err := url.Parse(db.URL)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(role, "pw")
		err = runErr(t, u.String(), fastOptions(t, slotName(db, "norepl"), "items"))
		if !errors.Is(err, cdc.ErrPermission) || !strings.Contains(err.Error(), "REPLICATION") {
			t.Fatalf("err %v, want ErrPermission naming REPLICATION", err)
		}
	})

	t.Run("table of another owner", func(t *testing.T) {
		t.Parallel()
		db := servers.Postgres(t).NewDatabase(t)
		exec(t, connect(t, db.URL), `CREATE TABLE items (id bigint PRIMARY KEY)`) // owned by the superuser
		err := runErr(t, db.RoleURL, fastOptions(t, slotName(db, "owner"), "items"))
		if !errors.Is(err, cdc.ErrPermission) || !strings.Contains(err.Error(), "ownership") {
			t.Fatalf("err %v, want ErrPermission naming ownership", err)
		}
	})

	t.Run("missing table", func(t *testing.T) {
		t.Parallel()
		db := servers.Postgres(t).NewDatabase(t)
		exec(t, connect(t, db.URL), `CREATE TABLE items (id bigint PRIMARY KEY)`)
		err := runErr(t, db.RoleURL, fastOptions(t, slotName(db, "missing"), "items", "Items"))
		if !errors.Is(err, cdc.ErrTableMissing) || !strings.Contains(err.Error(), `"Items"`) {
			t.Fatalf("err %v, want ErrTableMissing naming \"Items\"", err)
		}
	})

	t.Run("publication without deletes", func(t *testing.T) {
		t.Parallel()
		db := servers.Postgres(t).NewDatabase(t)
		exec(t, connect(t, db.URL), `CREATE TABLE items (id bigint PRIMARY KEY)`,
			`CREATE PUBLICATION pgcache FOR TABLE items WITH (publish = 'insert, update')`)
		err := runErr(t, db.URL, fastOptions(t, slotName(db, "pub"), "items"))
		if !errors.Is(err, cdc.ErrConfig) || !strings.Contains(err.Error(), "ALTER PUBLICATION") {
			t.Fatalf("err %v, want ErrConfig saying how to fix the publication", err)
		}
	})

	// Tables whose changes would not name the rows they touch are refused, with the fix.
	for _, tc := range []struct {
		name, create, want string
	}{
		{"no primary key", `CREATE TABLE items (id bigint, v text); ALTER TABLE items REPLICA IDENTITY FULL`, "ADD PRIMARY KEY"},
		{"replica identity nothing", `CREATE TABLE items (id bigint PRIMARY KEY); ALTER TABLE items REPLICA IDENTITY NOTHING`, "REPLICA IDENTITY DEFAULT"},
		{"identity index without the primary key", `CREATE TABLE items (id bigint PRIMARY KEY, email text NOT NULL UNIQUE);
			ALTER TABLE items REPLICA IDENTITY USING INDEX items_email_key`, "REPLICA IDENTITY DEFAULT"},
		{"partition without identity", `CREATE TABLE items (id bigint PRIMARY KEY) PARTITION BY RANGE (id);
			CREATE TABLE items_1 PARTITION OF items FOR VALUES FROM (0) TO (100);
			ALTER TABLE items_1 REPLICA IDENTITY NOTHING`, "items_1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := servers.Postgres(t).NewDatabase(t)
			exec(t, connect(t, db.RoleURL), tc.create)
			err := runErr(t, db.RoleURL, fastOptions(t, slotName(db, "ident"), "items"))
			if !errors.Is(err, cdc.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrConfig saying %q", err, tc.want)
			}
		})
	}

	t.Run("publication of partitions via root", func(t *testing.T) {
		t.Parallel()
		db := servers.Postgres(t).NewDatabase(t)
		exec(t, connect(t, db.RoleURL), `CREATE TABLE items (id bigint PRIMARY KEY) PARTITION BY RANGE (id)`)
		// An administrator's publication, which hides TRUNCATEs of single partitions.
		exec(t, connect(t, db.URL), `CREATE PUBLICATION pgcache FOR TABLE items WITH (publish_via_partition_root = true)`)
		err := runErr(t, db.RoleURL, fastOptions(t, slotName(db, "viaroot"), "items"))
		if !errors.Is(err, cdc.ErrConfig) || !strings.Contains(err.Error(), "publish_via_partition_root = false") {
			t.Fatalf("err %v, want ErrConfig saying to set publish_via_partition_root", err)
		}
	})
}

func TestNewStreamRejectsBadOptions(t *testing.T) {
	t.Parallel()
	good := cdc.Options{Slot: "pgcache", Publication: "pgcache", Tables: []string{"items"}}
	for _, tc := range []struct {
		name   string
		modify func(*cdc.Options)
		conn   string
	}{
		{"empty slot", func(o *cdc.Options) { o.Slot = "" }, ""},
		{"upper-case slot", func(o *cdc.Options) { o.Slot = "PgCache" }, ""},
		{"slot with a dash", func(o *cdc.Options) { o.Slot = "pg-cache" }, ""},
		{"slot with a quote", func(o *cdc.Options) { o.Slot = "x'; DROP TABLE items; --" }, ""},
		{"long slot", func(o *cdc.Options) { o.Slot = strings.Repeat("s", 64) }, ""},
		{"empty publication", func(o *cdc.Options) { o.Publication = "" }, ""},
		{"publication starting with a digit", func(o *cdc.Options) { o.Publication = "1pub" }, ""},
		{"quoted publication", func(o *cdc.Options) { o.Publication = `pub"` }, ""},
		{"no tables", func(o *cdc.Options) { o.Tables = nil }, ""},
		{"empty table", func(o *cdc.Options) { o.Tables = []string{""} }, ""},
		{"empty schema", func(o *cdc.Options) { o.Tables = []string{".items"} }, ""},
		{"empty table after schema", func(o *cdc.Options) { o.Tables = []string{"public."} }, ""},
		{"NUL in table", func(o *cdc.Options) { o.Tables = []string{"ite\x00ms"} }, ""},
		{"long table", func(o *cdc.Options) { o.Tables = []string{strings.Repeat("t", 64)} }, ""},
		{"table twice", func(o *cdc.Options) { o.Tables = []string{"items", "items"} }, ""},
		{"negative interval", func(o *cdc.Options) { o.StatusInterval = -time.Second }, ""},
		{"max backoff under min", func(o *cdc.Options) { o.MinBackoff, o.MaxBackoff = time.Second, time.Millisecond }, ""},
		{"bad connection string", func(o *cdc.Options) {}, "postgres://%zz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := good
			tc.modify(&opts)
			conn := tc.conn
			if conn == "" {
				conn = "postgres://localhost/db"
			}
			_, err := cdc.NewStream(conn, opts, newRecorder())
			if !errors.Is(err, cdc.ErrConfig) || !cdc.IsFatal(err) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
		})
	}
	for _, tables := range [][]string{{"items"}, {"Sales.Order Items"}, {`we"ird.ta.ble`, "ünïcode"}} {
		opts := good
		opts.Tables = tables
		if _, err := cdc.NewStream("postgres://localhost/db", opts, newRecorder()); err != nil {
			t.Errorf("tables %q: %v", tables, err)
		}
	}
	if _, err := cdc.NewStream("postgres://localhost/db", good, nil); !errors.Is(err, cdc.ErrConfig) {
		t.Errorf("nil handler: err = %v, want ErrConfig", err)
	}
}

// TestPostgresRestart checks that Run reconnects after the server restarts and resumes
// from the slot.
func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	pg := integration.NewPostgres(t, integration.PostgresOptions{})
	db := pg.NewDatabase(t)
	conn := connect(t, db.RoleURL)
	exec(t, conn, `CREATE TABLE items (id bigint PRIMARY KEY)`)
	rec := newRecorder()
	r := start(t, db.RoleURL, fastOptions(t, "s_restart", "items"), rec)
	r.waitConnected(t)
	exec(t, conn, `INSERT INTO items VALUES (1)`)
	if tx := rec.next(t); tx.Changes[0].Key[0] != "1" {
		t.Fatalf("key %s, want 1", tx.Changes[0].Key[0])
	}
	conn.Close(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	conn = connect(t, db.RoleURL)
	exec(t, conn, `INSERT INTO items VALUES (2)`)
	for {
		tx := rec.next(t)
		if k := tx.Changes[0].Key[0]; k == "2" {
			break
		} else if k != "1" { // 1 may be redelivered if its confirmation was lost
			t.Fatalf("key %s, want 2", k)
		}
	}
	if st := r.Stats(); st.Reconnects == 0 {
		t.Errorf("Stats.Reconnects = 0 after a restart")
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestSlotTakeover checks that a second Stream on a slot in use waits, then takes over.
func TestSlotTakeover(t *testing.T) {
	t.Parallel()
	db := servers.Postgres(t).NewDatabase(t)
	conn := connect(t, db.URL)
	exec(t, conn, `CREATE TABLE items (id bigint PRIMARY KEY)`)
	opts := fastOptions(t, slotName(db, "takeover"), "items")

	recA := newRecorder()
	a := start(t, db.URL, opts, recA)
	a.waitConnected(t)

	recB := newRecorder()
	b := start(t, db.URL, opts, recB)
	waitFor(t, "the standby to retry", func() bool {
		select {
		case err := <-b.done:
			t.Fatalf("the standby's Run returned %v while the slot was in use", err)
		default:
		}
		return b.Stats().Reconnects >= 3
	})
	if b.Stats().Connected {
		t.Fatal("the standby is connected while the slot is in use")
	}
	exec(t, conn, `INSERT INTO items VALUES (1)`)
	if tx := recA.next(t); tx.Changes[0].Key[0] != "1" {
		t.Fatal("the active stream did not get the change")
	}

	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	b.waitConnected(t)
	t.Logf("the standby took over %v after the active stream stopped", time.Since(stopped))
	exec(t, conn, `INSERT INTO items VALUES (2)`)
	if tx := recB.next(t); tx.Changes[0].Key[0] != "2" {
		t.Fatalf("the standby's first transaction has key %s, want 2", tx.Changes[0].Key[0])
	}
	if len(recB.gaps) != 0 || len(recA.gaps) != 1 {
		t.Errorf("Gap calls: active %d, standby %d; want 1 and 0", len(recA.gaps), len(recB.gaps))
	}
}

// TestSlotInvalidated checks that a slot Postgres invalidated is replaced, with a Gap.
func TestSlotInvalidated(t *testing.T) {
	t.Parallel()
	pg := integration.NewPostgres(t, integration.PostgresOptions{Settings: map[string]string{"max_slot_wal_keep_size": "1MB"}})
	db := pg.NewDatabase(t)
	conn := connect(t, db.URL)
	exec(t, conn, `CREATE TABLE items (id bigint PRIMARY KEY)`)
	opts := fastOptions(t, "s_lost", "items")

	rec := newRecorder()
	r := start(t, db.URL, opts, rec)
	if g := rec.nextGap(t); g.reason != cdc.GapSlotCreated {
		t.Fatalf("Gap(%q, %q), want %q", g.tables, g.reason, cdc.GapSlotCreated)
	}
	r.waitConnected(t)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	// While no one streams, write past max_slot_wal_keep_size: the checkpoint removes
	// WAL the slot needs and invalidates it.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	waitFor(t, "the slot to be lost", func() bool {
		exec(t, conn, `INSERT INTO items SELECT g FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING`,
			`SELECT pg_switch_wal()`, `CHECKPOINT`)
		var status string
		if err := conn.QueryRow(ctx, `SELECT wal_status FROM pg_replication_slots WHERE slot_name = 's_lost'`).Scan(&status); err != nil {
			t.Fatal(err)
		}
		return status == "lost"
	})

	rec = newRecorder()
	r = start(t, db.URL, opts, rec)
	if g := rec.nextGap(t); g.reason != cdc.GapSlotInvalidated || !reflect.DeepEqual(g.tables, []string{"public.items"}) {
		t.Fatalf("Gap(%q, %q), want ([public.items], %q)", g.tables, g.reason, cdc.GapSlotInvalidated)
	}
	r.waitConnected(t)
	exec(t, conn, `DELETE FROM items WHERE id = 7`)
	if tx := rec.next(t); tx.Changes[0].String() != `delete public.items ["7"]` {
		t.Fatalf("got %s, want the delete of 7", tx.Changes[0].String())
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}
