package cdc_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/cdc"
)

// These tests check the stream's pipeline: the receiver reads ahead of a busy handler,
// but the slot's position never passes a transaction the handler has not accepted.

// gate is a Handler that holds chosen transactions until the test releases them. Every
// call is reported on entered as it starts; accepted transactions go to handled.
type gate struct {
	entered chan *cdc.Tx
	handled chan *cdc.Tx
	release chan struct{} // closed by the test
	// hold reports whether tx is held until release (or ctx is done); fail, called
	// after, may refuse it. Both see every delivery, redeliveries included.
	hold func(tx *cdc.Tx) bool
	fail func(tx *cdc.Tx) error
	// cancelled is closed when a held call sees its ctx done; the call then returns
	// only after release when honourCtx is false.
	cancelled chan struct{}
	honourCtx bool

	active atomic.Int32 // calls in progress
}

func newGate() *gate {
	return &gate{
		entered:   make(chan *cdc.Tx, 1000),
		handled:   make(chan *cdc.Tx, 1000),
		release:   make(chan struct{}),
		cancelled: make(chan struct{}),
		honourCtx: true,
		hold:      func(*cdc.Tx) bool { return false },
		fail:      func(*cdc.Tx) error { return nil },
	}
}

func (g *gate) Gap(context.Context, []string, string) error { return nil }

func (g *gate) Handle(ctx context.Context, tx *cdc.Tx) error {
	g.active.Add(1)
	defer g.active.Add(-1)
	g.entered <- tx
	if g.hold(tx) {
		select {
		case <-g.release:
		case <-ctx.Done():
			close(g.cancelled)
			if !g.honourCtx {
				<-g.release
			}
			return ctx.Err()
		}
	}
	if err := g.fail(tx); err != nil {
		return err
	}
	g.handled <- tx
	return nil
}

func recv(t *testing.T, c <-chan *cdc.Tx, what string) *cdc.Tx {
	t.Helper()
	select {
	case tx := <-c:
		return tx
	case <-time.After(wait):
		t.Fatalf("no %s transaction within %v", what, wait)
		return nil
	}
}

func key(tx *cdc.Tx) string { return tx.Changes[0].Key[0] }

// currentLSN returns the server's current WAL position.
func currentLSN(t *testing.T, conn *pgx.Conn) cdc.LSN {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var s string
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// reported returns the flush position the slot's walsender last received from the
// stream, and when the stream sent it.
func reported(t *testing.T, conn *pgx.Conn, slot string) (cdc.LSN, time.Time, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var (
		s  *string
		at *time.Time
	)
	err := conn.QueryRow(ctx, `SELECT r.flush_lsn::text, r.reply_time FROM pg_stat_replication r
		JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = $1`, slot).Scan(&s, &at)
	if errors.Is(err, pgx.ErrNoRows) || s == nil || at == nil {
		return 0, time.Time{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(*s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn, *at, true
}

func insertEach(t *testing.T, conn *pgx.Conn, table string, keys ...int) {
	t.Helper()
	for _, k := range keys {
		exec(t, conn, fmt.Sprintf(`INSERT INTO %s VALUES (%d)`, table, k))
	}
}

// TestReadAheadConfirmsOnlyHandled checks that while the handler holds a transaction,
// the stream receives the ones after it and keepalives past them, and reports to the
// server nothing at or beyond the held transaction; and that once released, all are
// handled in order and confirmed, and idle keepalives advance the slot again.
func TestReadAheadConfirmsOnlyHandled(t *testing.T) {
	t.Parallel()
	db := servers.Postgres(t).NewDatabase(t)
	conn := connect(t, db.URL)
	exec(t, conn, `CREATE TABLE items (id bigint PRIMARY KEY)`, `CREATE TABLE unpublished (id bigint PRIMARY KEY)`)
	slot := slotName(db, "readahead")
	g := newGate()
	g.hold = func(tx *cdc.Tx) bool { return key(tx) == "2" }
	r := start(t, db.URL, fastOptions(t, slot, "items"), g)
	r.waitConnected(t)

	insertEach(t, conn, "items", 1, 2, 3, 4, 5)
	first := recv(t, g.handled, "first")
	recv(t, g.entered, "first")
	held := recv(t, g.entered, "held")
	if key(first) != "1" || key(held) != "2" {
		t.Fatalf("handled %s, then holding %s; want 1, then 2", key(first), key(held))
	}
	waitFor(t, "the stream to receive 3, 4 and 5 while 2 is held", func() bool { return r.Stats().Pending == 4 })

	// WAL past all of them, of a table not published: keepalives now carry a WAL end
	// that an idle stream would confirm.
	mark := currentLSN(t, conn)
	insertEach(t, conn, "unpublished", 1, 2, 3)
	waitFor(t, "a keepalive past the unpublished inserts", func() bool { return r.Stats().ReceivedLSN > mark })
	// A status update the server received after that keepalive still stops short of 2.
	seen := time.Now()
	waitFor(t, "a status update after the keepalive", func() bool {
		_, at, ok := reported(t, conn, slot)
		return ok && at.After(seen)
	})
	if pos, _, _ := reported(t, conn, slot); pos >= held.EndLSN {
		t.Fatalf("the stream reported %s while transaction 2, ending at %s, was held", pos, held.EndLSN)
	}
	if pos := confirmedFlush(t, conn, slot); pos >= held.EndLSN {
		t.Fatalf("confirmed_flush_lsn %s while transaction 2, ending at %s, was held", pos, held.EndLSN)
	}
	if pos := r.Stats().ConfirmedLSN; pos < first.EndLSN || pos >= held.EndLSN {
		t.Fatalf("Stats.ConfirmedLSN %s, want from %s (1 handled) to before %s (2 held)", pos, first.EndLSN, held.EndLSN)
	}
	if len(g.handled) != 0 || len(g.entered) != 0 {
		t.Fatalf("%d transactions handled, %d more given to the handler while it held one", len(g.handled), len(g.entered))
	}

	close(g.release)
	var got []string
	var last *cdc.Tx
	for range 4 {
		last = recv(t, g.handled, "released")
		got = append(got, key(last))
	}
	if want := []string{"2", "3", "4", "5"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("handled %q after the release, want %q", got, want)
	}
	waitFor(t, "confirmed_flush_lsn to pass the unpublished inserts", func() bool { return confirmedFlush(t, conn, slot) > mark })
	if st := r.Stats(); st.Pending != 0 || st.Transactions != 5 || st.ConfirmedLSN < last.EndLSN {
		t.Fatalf("Stats %+v; want nothing pending, 5 transactions, confirmed from %s", st, last.EndLSN)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestHandlerErrorAfterReadAhead checks that when the handler refuses a transaction
// after the stream read ahead of it, the stream starts over from the last transaction
// handled and delivers the refused one and every one after it again, in order.
func TestHandlerErrorAfterReadAhead(t *testing.T) {
	t.Parallel()
	db := servers.Postgres(t).NewDatabase(t)
	conn := connect(t, db.URL)
	exec(t, conn, `CREATE TABLE items (id bigint PRIMARY KEY)`)
	slot := slotName(db, "readerr")
	g := newGate()
	var refused atomic.Bool
	g.hold = func(tx *cdc.Tx) bool { return key(tx) == "2" && !refused.Load() }
	g.fail = func(tx *cdc.Tx) error {
		if key(tx) == "2" && refused.CompareAndSwap(false, true) {
			return errors.New("redis is down")
		}
		return nil
	}
	r := start(t, db.URL, fastOptions(t, slot, "items"), g)
	r.waitConnected(t)

	insertEach(t, conn, "items", 1, 2, 3, 4, 5)
	if tx := recv(t, g.handled, "first"); key(tx) != "1" {
		t.Fatalf("handled %s first, want 1", key(tx))
	}
	recv(t, g.entered, "first")
	held := recv(t, g.entered, "held")
	waitFor(t, "the stream to receive 3, 4 and 5 while 2 is held", func() bool { return r.Stats().Pending == 4 })
	close(g.release) // 2 is refused

	// 1 may come again, if the session's last status update did not reach the server.
	var got []string
	var last *cdc.Tx
	for !slices.Contains(got, "5") {
		last = recv(t, g.handled, "redelivered")
		got = append(got, key(last))
	}
	if !reflect.DeepEqual(got, []string{"2", "3", "4", "5"}) && !reflect.DeepEqual(got, []string{"1", "2", "3", "4", "5"}) {
		t.Fatalf("handled %q after refusing 2, want 2, 3, 4, 5 (after 1 at most)", got)
	}
	if st := r.Stats(); st.Reconnects == 0 {
		t.Fatal("no reconnect after the handler failed")
	}
	var again *cdc.Tx
	for len(g.entered) > 0 {
		if tx := <-g.entered; key(tx) == "2" {
			again = tx
		}
	}
	if again == nil || again.XID != held.XID || again.EndLSN != held.EndLSN {
		t.Fatalf("transaction 2 came again as %+v, want xid %d ending at %s", again, held.XID, held.EndLSN)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "confirmed_flush_lsn to reach "+last.EndLSN.String(), func() bool { return confirmedFlush(t, conn, slot) >= last.EndLSN })
}

// TestSlowHandlerKeepsConnection checks that a handler busy for longer than the server's
// wal_sender_timeout, with the queue behind it full, does not cost the connection: the
// stream goes on reporting its position while it waits.
func TestSlowHandlerKeepsConnection(t *testing.T) {
	t.Parallel()
	db := servers.Postgres(t).NewDatabase(t)
	const timeout = time.Second
	u, err := url.Parse(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("wal_sender_timeout", timeout.String()) // a startup parameter
	u.RawQuery = q.Encode()
	connURL := u.String()
	conn := connect(t, connURL)
	exec(t, conn, `CREATE TABLE items (id bigint PRIMARY KEY)`)
	var setting string
	if err := conn.QueryRow(context.Background(), `SHOW wal_sender_timeout`).Scan(&setting); err != nil || setting != "1s" {
		t.Fatalf("wal_sender_timeout %q (%v), want 1s", setting, err)
	}

	g := newGate()
	g.hold = func(tx *cdc.Tx) bool { return key(tx) == "1" }
	r := start(t, connURL, fastOptions(t, slotName(db, "slow"), "items"), g)
	r.waitConnected(t)

	// 1 is held; 2, larger than the queue's bound on changes, fills it; 3 waits.
	exec(t, conn, `INSERT INTO items VALUES (1)`,
		`INSERT INTO items SELECT g FROM generate_series(10, 70009) g`,
		`INSERT INTO items VALUES (2)`)
	recv(t, g.entered, "held")
	waitFor(t, "the stream to receive the large transaction", func() bool { return r.Stats().Pending == 2 })
	// Three timeouts with the handler held and the receiver waiting for room.
	held := time.NewTimer(3 * timeout)
	<-held.C
	close(g.release)
	var got []int
	for range 3 {
		got = append(got, len(recv(t, g.handled, "released").Changes))
	}
	// One more on the same connection: had the server dropped it, the stream would have
	// reconnected before receiving this one, and delivered some of the others again.
	exec(t, conn, `INSERT INTO items VALUES (3)`)
	got = append(got, len(recv(t, g.handled, "after").Changes))
	if !reflect.DeepEqual(got, []int{1, 70000, 1, 1}) {
		t.Fatalf("handled transactions of %v changes, want 1, 70000, 1, 1", got)
	}
	if st := r.Stats(); st.Reconnects != 0 {
		t.Fatalf("%d reconnects: the server dropped the connection while the handler was busy", st.Reconnects)
	}
	if n := len(g.entered) + 1; n != 4 {
		t.Fatalf("%d calls to the handler for 4 transactions", n)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestRunWaitsForHandler checks that Run, stopped while the handler holds a transaction,
// cancels the handler's context and returns only after the handler did, having
// confirmed nothing it had not handled.
func TestRunWaitsForHandler(t *testing.T) {
	t.Parallel()
	db := servers.Postgres(t).NewDatabase(t)
	conn := connect(t, db.URL)
	exec(t, conn, `CREATE TABLE items (id bigint PRIMARY KEY)`)
	slot := slotName(db, "waits")
	g := newGate()
	g.honourCtx = false // holds on after its ctx is done, until released
	g.hold = func(tx *cdc.Tx) bool { return key(tx) == "2" }
	r := start(t, db.URL, fastOptions(t, slot, "items"), g)
	r.waitConnected(t)

	insertEach(t, conn, "items", 1, 2, 3)
	first := recv(t, g.handled, "first")
	recv(t, g.entered, "first")
	held := recv(t, g.entered, "held")
	waitFor(t, "the stream to receive 3", func() bool { return r.Stats().Pending == 2 })

	stopped := make(chan error, 1)
	go func() { stopped <- r.stop(t) }()
	select {
	case <-g.cancelled:
	case <-time.After(wait):
		t.Fatal("the handler's context was not cancelled when Run was stopped")
	}
	// Run must not return while the handler runs. A second is ample for a Run that does
	// not wait to return: closing the connection takes milliseconds.
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) while the handler was still running", err)
	case <-time.After(time.Second):
	}
	if !r.Stats().Connected {
		t.Fatal("the session ended while the handler was still running")
	}
	close(g.release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if n := g.active.Load(); n != 0 {
		t.Fatalf("%d handler calls still running after Run returned", n)
	}
	waitFor(t, "confirmed_flush_lsn to reach 1", func() bool { return confirmedFlush(t, conn, slot) >= first.EndLSN })
	if pos := confirmedFlush(t, conn, slot); pos >= held.EndLSN {
		t.Fatalf("confirmed_flush_lsn %s, want before %s (2 not handled)", pos, held.EndLSN)
	}
}

// batcher is a BatchHandler recording the batches it is given. The first batch is held
// until release; fail may refuse a batch.
type batcher struct {
	t       *testing.T
	batches chan []*cdc.Tx
	entered chan struct{}
	release chan struct{}
	fail    func([]*cdc.Tx) error

	mu    sync.Mutex
	calls int
}

func (b *batcher) Gap(context.Context, []string, string) error { return nil }

func (b *batcher) Handle(context.Context, *cdc.Tx) error {
	b.t.Error("Handle called on a BatchHandler")
	return errors.New("Handle called")
}

func (b *batcher) HandleBatch(ctx context.Context, txs []*cdc.Tx) error {
	b.mu.Lock()
	b.calls++
	first := b.calls == 1
	b.mu.Unlock()
	if first {
		close(b.entered)
		select {
		case <-b.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if b.fail != nil {
		if err := b.fail(txs); err != nil {
			return err
		}
	}
	b.batches <- txs
	return nil
}

func (b *batcher) next(t *testing.T) []*cdc.Tx {
	t.Helper()
	select {
	case txs := <-b.batches:
		return txs
	case <-time.After(wait):
		t.Fatalf("no batch within %v", wait)
		return nil
	}
}

func keysOf(txs []*cdc.Tx) []string {
	var ks []string
	for _, tx := range txs {
		ks = append(ks, key(tx))
	}
	return ks
}

// TestBatchHandler checks that a BatchHandler gets everything queued in one call, in
// order, and that a refused batch is delivered again whole.
func TestBatchHandler(t *testing.T) {
	t.Parallel()
	db := servers.Postgres(t).NewDatabase(t)
	conn := connect(t, db.URL)
	exec(t, conn, `CREATE TABLE items (id bigint PRIMARY KEY)`)
	slot := slotName(db, "batch")
	b := &batcher{t: t, batches: make(chan []*cdc.Tx, 100), entered: make(chan struct{}), release: make(chan struct{})}
	var refused atomic.Bool
	b.fail = func(txs []*cdc.Tx) error {
		if slices.Contains(keysOf(txs), "7") && refused.CompareAndSwap(false, true) {
			return errors.New("redis is down")
		}
		return nil
	}
	r := start(t, db.URL, fastOptions(t, slot, "items"), b)
	r.waitConnected(t)

	insertEach(t, conn, "items", 1)
	<-b.entered
	insertEach(t, conn, "items", 2, 3, 4, 5, 6)
	waitFor(t, "the stream to receive 2 to 6 while 1 is held", func() bool { return r.Stats().Pending == 6 })
	close(b.release)
	if got := keysOf(b.next(t)); !reflect.DeepEqual(got, []string{"1"}) {
		t.Fatalf("first batch %q, want [1]", got)
	}
	batch := b.next(t)
	if got := keysOf(batch); !reflect.DeepEqual(got, []string{"2", "3", "4", "5", "6"}) {
		t.Fatalf("second batch %q, want 2 to 6 in one", got)
	}
	last := batch[len(batch)-1]
	waitFor(t, "confirmed_flush_lsn to reach 6", func() bool { return confirmedFlush(t, conn, slot) >= last.EndLSN })
	if st := r.Stats(); st.Transactions != 6 || st.Changes != 6 {
		t.Fatalf("Stats counted %d transactions, %d changes; want 6 and 6", st.Transactions, st.Changes)
	}

	// A refused batch comes again, from its first transaction.
	insertEach(t, conn, "items", 7, 8, 9)
	var got []string
	for !slices.Contains(got, "9") {
		got = append(got, keysOf(b.next(t))...)
	}
	if !reflect.DeepEqual(got, []string{"7", "8", "9"}) {
		t.Fatalf("handled %q after the refusal, want 7, 8, 9", got)
	}
	if !refused.Load() || r.Stats().Reconnects == 0 {
		t.Fatal("the batch with 7 was not refused, or the stream did not start over")
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}
