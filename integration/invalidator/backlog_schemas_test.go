package invalidator_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/readthrough"
)

// depot lives in a schema other than public, named by its model.
type depot struct {
	ID int64 `gorm:"primaryKey"`
	V  string
}

func (depot) TableName() string { return "stock.depots" }

// batchSizes is the Invalidator as a cdc.BatchHandler, recording the largest batch of
// transactions it was given, and how many gaps.
type batchSizes struct {
	cdc.BatchHandler

	mu   sync.Mutex
	max  int
	gaps []string // reason: tables
}

func (b *batchSizes) Handle(ctx context.Context, tx *cdc.Tx) error {
	return b.HandleBatch(ctx, []*cdc.Tx{tx})
}

func (b *batchSizes) HandleBatch(ctx context.Context, txs []*cdc.Tx) error {
	b.mu.Lock()
	b.max = max(b.max, len(txs))
	b.mu.Unlock()
	return b.BatchHandler.HandleBatch(ctx, txs)
}

func (b *batchSizes) Gap(ctx context.Context, tables []string, reason string) error {
	b.mu.Lock()
	b.gaps = append(b.gaps, fmt.Sprintf("%s: %s", reason, strings.Join(tables, ", ")))
	b.mu.Unlock()
	return b.BatchHandler.Gap(ctx, tables, reason)
}

func (b *batchSizes) gapsSeen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gaps
}

func (b *batchSizes) largest() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.max
}

// backlogTable is one of TestBacklogSchemas' tables: row k (1 to backlogRows) read
// through the cache and from Postgres.
type backlogTable struct {
	name   string
	cached func(ctx context.Context, k int) (any, bool, error)
	stored func(ctx context.Context, k int) (any, bool, error)
}

func tableOf[T comparable](e *schemaEnv, repo *readthrough.Repository[T], name string, id func(k int) any, where string, args func(k int) []any) backlogTable {
	return backlogTable{
		name: name,
		cached: func(ctx context.Context, k int) (any, bool, error) {
			return repo.Get(ctx, id(k))
		},
		stored: func(ctx context.Context, k int) (any, bool, error) {
			var rows []T
			err := e.db.WithContext(ctx).Where(where, args(k)...).Find(&rows).Error
			if err != nil || len(rows) == 0 {
				return *new(T), false, err
			}
			return rows[0], true, nil
		},
	}
}

const backlogRows = 20

// TestBacklogSchemas: the worker comes back to a backlog of thousands of small
// transactions, megabytes of WAL, and catches up through its backlog path (reads and
// handler calls gathered over many transactions) on the schemas teams have: replica
// identity FULL and USING INDEX, a composite key declared in another order than the
// columns, char(n) and uuid keys, a partitioned table and a table in another schema,
// all in a publication an administrator made, with NULLs. Every cached row ends equal
// to Postgres' row, deleted rows absent.
func TestBacklogSchemas(t *testing.T) {
	t.Parallel()
	e := newSchemaEnv(t, "", append(slices.Clone(identityDDL),
		`CREATE TABLE lines (line_no int NOT NULL, order_id bigint NOT NULL, qty int, PRIMARY KEY (order_id, line_no))`,
		`CREATE TABLE codes (code char(8) PRIMARY KEY, v text)`,
		`CREATE TABLE tokens (id uuid PRIMARY KEY, v text)`,
		`CREATE TABLE events (id bigint PRIMARY KEY, v text) PARTITION BY RANGE (id)`,
		`CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (10)`,
		`CREATE TABLE events_2 PARTITION OF events FOR VALUES FROM (10) TO (100)`,
		`CREATE SCHEMA stock`,
		`CREATE TABLE stock.depots (id bigint PRIMARY KEY, v text)`,
		fmt.Sprintf(`INSERT INTO full_rows SELECT k, 'v0' FROM generate_series(1, %[1]d) k;
			INSERT INTO idx_rows SELECT k, 'e' || k || '@x' FROM generate_series(1, %[1]d) k;
			INSERT INTO lines SELECT k, 1, 0 FROM generate_series(1, %[1]d) k;
			INSERT INTO codes SELECT 'c' || k, 'v0' FROM generate_series(1, %[1]d) k;
			INSERT INTO tokens SELECT lpad(k::text, 32, '0')::uuid, 'v0' FROM generate_series(1, %[1]d) k;
			INSERT INTO events SELECT k, 'v0' FROM generate_series(1, %[1]d) k;
			INSERT INTO stock.depots SELECT k, 'v0' FROM generate_series(1, %[1]d) k`, backlogRows),
		`CREATE PUBLICATION pgcache FOR TABLE full_rows, idx_rows, lines, codes, tokens, events, stock.depots
			WITH (publish_via_partition_root = true)`,
	)...)
	byID := func(k int) any { return int64(k) }
	uuidOf := func(k int) any { return fmt.Sprintf("00000000-0000-0000-0000-%012d", k) }
	codeOf := func(k int) any { return fmt.Sprintf("c%d", k) }
	tables := []backlogTable{
		tableOf(e, register[fullRow](t, e), "full_rows", byID, "id = ?", func(k int) []any { return []any{k} }),
		tableOf(e, register[idxRow](t, e), "idx_rows", byID, "id = ?", func(k int) []any { return []any{k} }),
		tableOf(e, register[line](t, e), "lines", func(k int) any { return []any{int64(1), int32(k)} },
			"order_id = 1 AND line_no = ?", func(k int) []any { return []any{k} }),
		tableOf(e, register[code](t, e), "codes", codeOf, "code = ?", func(k int) []any { return []any{codeOf(k)} }),
		tableOf(e, register[token](t, e), "tokens", uuidOf, "id = ?", func(k int) []any { return []any{uuidOf(k)} }),
		tableOf(e, register[event](t, e), "events", byID, "id = ?", func(k int) []any { return []any{k} }),
		tableOf(e, register[depot](t, e), "stock.depots", byID, "id = ?", func(k int) []any { return []any{k} }),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The worker streams once (the slot is made), and stops; every row is cached.
	stop := e.start(t, "full_rows", "idx_rows", "lines", "codes", "tokens", "events", "stock.depots")
	stop()
	for _, tb := range tables {
		for k := 1; k <= backlogRows; k++ {
			for range 2 {
				if _, ok, err := tb.cached(ctx, k); err != nil || !ok {
					t.Fatalf("%s row %d: %v, %v", tb.name, k, ok, err)
				}
			}
		}
	}

	// Thousands of small transactions while it is away, each changing one row of one
	// table (its key columns too, for a few), then deletes.
	var start, end string
	if err := e.db.Raw(`SELECT pg_current_wal_lsn()::text`).Scan(&start).Error; err != nil {
		t.Fatal(err)
	}
	e.exec(t, fmt.Sprintf(`DO $$
		DECLARE
			pad text := repeat('x', 300);
			k int;
		BEGIN
			FOR i IN 1..4200 LOOP
				k := i %% %[1]d + 1;
				CASE i %% 7
					WHEN 0 THEN UPDATE full_rows SET v = pad || i WHERE id = k;
					WHEN 1 THEN UPDATE idx_rows SET email = 'e' || k || '.' || i || '@x' || pad WHERE id = k;
					WHEN 2 THEN UPDATE lines SET qty = i WHERE order_id = 1 AND line_no = k;
					WHEN 3 THEN UPDATE codes SET v = pad || i WHERE code = 'c' || k;
					WHEN 4 THEN UPDATE tokens SET v = pad || i WHERE id = lpad(k::text, 32, '0')::uuid;
					WHEN 5 THEN UPDATE events SET v = pad || i WHERE id = k;
					ELSE UPDATE stock.depots SET v = pad || i WHERE id = k;
				END CASE;
				COMMIT;
			END LOOP;
		END $$`, backlogRows))
	// NULLs, in the old tuple of replica identity FULL too.
	e.exec(t, `UPDATE full_rows SET v = NULL WHERE id = 19; UPDATE stock.depots SET v = NULL WHERE id = 19;
		UPDATE full_rows SET v = 'back' WHERE id = 18; UPDATE full_rows SET v = NULL WHERE id = 18`)
	e.exec(t, `DELETE FROM full_rows WHERE id = 20; DELETE FROM idx_rows WHERE id = 20;
		DELETE FROM lines WHERE line_no = 20; DELETE FROM codes WHERE code = 'c20';
		DELETE FROM tokens WHERE id = lpad('20', 32, '0')::uuid; DELETE FROM events WHERE id = 20;
		DELETE FROM stock.depots WHERE id = 20`)
	var walBytes int64
	if err := e.db.Raw(`SELECT pg_current_wal_lsn()::text, pg_wal_lsn_diff(pg_current_wal_lsn(), ?::pg_lsn)::bigint`, start).
		Row().Scan(&end, &walBytes); err != nil {
		t.Fatal(err)
	}
	if walBytes < 2<<20 {
		t.Fatalf("the backlog is %d bytes of WAL (%s to %s); want over 2 MB, past the stream's 1 MB backlog threshold", walBytes, start, end)
	}

	// differing counts the cached rows that are not Postgres' row.
	differing := func() (n int, first string) {
		for _, tb := range tables {
			for k := 1; k <= backlogRows; k++ {
				got, gotOK, err := tb.cached(ctx, k)
				if err != nil {
					t.Fatalf("%s row %d: %v", tb.name, k, err)
				}
				want, wantOK, err := tb.stored(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				if gotOK != wantOK || got != want {
					if n == 0 {
						first = fmt.Sprintf("%s row %d: cached %+v (%v), Postgres %+v (%v)", tb.name, k, got, gotOK, want, wantOK)
					}
					n++
				}
			}
		}
		return n, first
	}
	// Without the worker the cache serves the rows as they were: what follows can fail.
	if n, _ := differing(); n < len(tables)*backlogRows/2 {
		t.Fatalf("%d cached rows differ from Postgres before the worker is back; want most of them", n)
	}

	handler := &batchSizes{BatchHandler: e.inv}
	runStream(t, e.url, cdc.Options{
		Slot: "slot_" + e.pg.Name, Publication: "pgcache",
		Tables:         []string{"full_rows", "idx_rows", "lines", "codes", "tokens", "events", "stock.depots"},
		StatusInterval: 100 * time.Millisecond,
	}, handler)
	var last string
	defer func() {
		if t.Failed() && last != "" {
			t.Log("last difference seen: " + last)
		}
	}()
	integration.Eventually(t, "every cached row to equal Postgres' row after the backlog", func() bool {
		var n int
		n, last = differing()
		return n == 0
	})
	// A new stream cannot know what partitions a partitioned table had while it was
	// away: it flushes those (events) whole, and only those.
	if g := handler.gapsSeen(); !slices.Equal(g, []string{cdc.GapPartitions + ": public.events"}) {
		t.Fatalf("gaps on the worker's return: %q; want only the partitioned table's (the others were flushed whole, and their backlog not tested)", g)
	}
	// The backlog went through the path that gathers transactions.
	if n := handler.largest(); n < 2 {
		t.Fatalf("the handler was given at most %d transaction at a time over %d bytes of WAL; want the backlog gathered", n, walBytes)
	}
	t.Logf("%d bytes of WAL; at most %d transactions a handler call", walBytes, handler.largest())
}
