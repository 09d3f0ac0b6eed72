package cdc_test

import (
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgcache/pgcache/cdc"
)

const (
	oidInt8 = 20
	oidInt4 = 23
	oidText = 25
	oidUUID = 2950

	relItems  = 16390
	relOrders = 16400
	relLog    = 16410
	relFull   = 16420
)

var (
	itemsRel  = encRelation(relItems, "public", "items", 'd', col{"id", oidInt8, true}, col{"name", oidText, false})
	ordersRel = encRelation(relOrders, "Sales", "Order Items", 'd',
		col{"order_id", oidUUID, true}, col{"qty", oidInt4, false}, col{"line", oidInt4, true})
	logRel  = encRelation(relLog, "public", "log", 'n', col{"msg", oidText, false})
	fullRel = encRelation(relFull, "public", "full", 'f', col{"id", oidInt8, true}, col{"doc", oidText, true})
)

const uuid1 = "5f0e8c7a-3b1d-4e2f-9a6b-7c8d9e0f1a2b"

// decodeAll feeds msgs to a new Decoder and returns the transactions it returned.
func decodeAll(t *testing.T, msgs ...[]byte) []*cdc.Tx {
	t.Helper()
	return decodeWith(t, cdc.NewDecoder(), msgs...)
}

func decodeWith(t *testing.T, d *cdc.Decoder, msgs ...[]byte) []*cdc.Tx {
	t.Helper()
	var txs []*cdc.Tx
	for i, m := range msgs {
		tx, err := d.Decode(m)
		if err != nil {
			t.Fatalf("message %d (%q): %v", i, m[0], err)
		}
		if tx != nil {
			txs = append(txs, tx)
		}
	}
	if d.InTransaction() {
		t.Fatal("decoder still in a transaction after the last message")
	}
	return txs
}

// describe renders a change as "kind schema.name key old-key".
func describeAll(cs []cdc.Change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	return out
}

func TestDecoderTransaction(t *testing.T) {
	txs := decodeAll(t,
		encBegin(0x1000, 731),
		itemsRel,
		encInsert(relItems, text("1"), text("bolt")),
		ordersRel,
		encInsert(relOrders, text(uuid1), text("5"), text("1")),
		encUpdate(relItems, 0, nil, []val{text("1"), text("nut")}),
		encUpdate(relItems, 'K', []val{text("1"), null}, []val{text("2"), text("nut")}),
		encUpdate(relOrders, 'K', []val{text(uuid1), null, text("1")}, []val{text(uuid1), text("5"), text("2")}),
		encDelete(relItems, 'K', text("2"), null),
		encTruncate(0, relItems, relOrders),
		encCommit(0x1000, 0x1040),
	)
	if len(txs) != 1 {
		t.Fatalf("got %d transactions, want 1", len(txs))
	}
	tx := txs[0]
	if tx.XID != 731 || tx.CommitLSN != 0x1000 || tx.EndLSN != 0x1040 {
		t.Errorf("tx xid=%d commit=%s end=%s, want 731 0/1000 0/1040", tx.XID, tx.CommitLSN, tx.EndLSN)
	}
	if want := time.Date(2024, 1, 2, 3, 4, 5, 6000, time.UTC); !tx.CommitTime.Equal(want) {
		t.Errorf("commit time %v, want %v", tx.CommitTime, want)
	}
	want := []string{
		`insert public.items ["1"]`,
		`insert Sales.Order Items ["` + uuid1 + `" "1"]`,
		`update public.items ["1"]`,
		`update public.items ["2"] from ["1"]`,
		`update Sales.Order Items ["` + uuid1 + `" "2"] from ["` + uuid1 + `" "1"]`,
		`delete public.items ["2"]`,
		`truncate public.items []`,
		`truncate Sales.Order Items []`,
	}
	if got := describeAll(tx.Changes); !reflect.DeepEqual(got, want) {
		t.Errorf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, c := range tx.Changes {
		if c.Kind == cdc.Truncate && c.Key != nil {
			t.Errorf("truncate carries key %q", c.Key)
		}
	}
	rel := tx.Changes[1].Relation
	wantCols := []cdc.Column{{Name: "order_id", TypeOID: oidUUID, BaseTypeOID: oidUUID, Key: true}, {Name: "line", TypeOID: oidInt4, BaseTypeOID: oidInt4, Key: true}}
	if got := rel.KeyColumns(); !reflect.DeepEqual(got, wantCols) {
		t.Errorf("KeyColumns = %+v, want %+v", got, wantCols)
	}
	if rel.ID != relOrders || rel.ReplicaIdentity != 'd' || len(rel.Columns) != 3 {
		t.Errorf("relation %+v", rel)
	}
}

func TestDecoderSeveralTransactions(t *testing.T) {
	txs := decodeAll(t,
		itemsRel, // relations may come outside a transaction too
		encBegin(0x2000, 1),
		encInsert(relItems, text("1"), null),
		encCommit(0x2000, 0x2010),
		encBegin(0x3000, 2),
		encOrigin(0x99, "upstream"),
		encType(90000, "public", "mood"),
		encMessage(true, "p", "payload"),
		encDelete(relItems, 'K', text("1"), null),
		encCommit(0x3000, 0x3010),
		encMessage(false, "p", "outside"),
		encBegin(0x4000, 3), // an empty transaction
		encCommit(0x4000, 0x4010),
	)
	if len(txs) != 3 {
		t.Fatalf("got %d transactions, want 3", len(txs))
	}
	for i, want := range []struct {
		xid     uint32
		end     cdc.LSN
		changes []string
	}{
		{1, 0x2010, []string{`insert public.items ["1"]`}},
		{2, 0x3010, []string{`delete public.items ["1"]`}},
		{3, 0x4010, nil},
	} {
		tx := txs[i]
		got := describeAll(tx.Changes)
		if tx.XID != want.xid || tx.EndLSN != want.end || len(got) != len(want.changes) || len(got) > 0 && !reflect.DeepEqual(got, want.changes) {
			t.Errorf("tx %d: xid %d end %s changes %q; want xid %d end %s changes %q", i, tx.XID, tx.EndLSN, got, want.xid, want.end, want.changes)
		}
	}
}

func TestDecoderRelationReplaced(t *testing.T) {
	d := cdc.NewDecoder()
	feed := func(m []byte) *cdc.Tx {
		t.Helper()
		tx, err := d.Decode(m)
		if err != nil {
			t.Fatal(err)
		}
		return tx
	}
	feed(itemsRel)
	feed(encBegin(0x10, 1))
	feed(encInsert(relItems, text("1"), text("a")))
	// ALTER TABLE items ADD COLUMN price int, and the key changed to (id, price):
	// the server describes the relation again before its next change (the decoder was
	// not told the primary key, so under DEFAULT it is the identity's columns).
	feed(encRelation(relItems, "public", "items", 'd', col{"id", oidInt8, true}, col{"name", oidText, false}, col{"price", oidInt4, true}))
	feed(encInsert(relItems, text("2"), text("b"), text("30")))
	tx := feed(encCommit(0x10, 0x20))
	got := describeAll(tx.Changes)
	want := []string{`insert public.items ["1"]`, `insert public.items ["2" "30"]`}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("changes %q, want %q", got, want)
	}
	if len(tx.Changes[0].Relation.Columns) != 2 || len(tx.Changes[1].Relation.Columns) != 3 {
		t.Error("an earlier change's relation was modified by the new relation message")
	}
	if r, ok := d.Relation(relItems); !ok || len(r.Columns) != 3 {
		t.Errorf("Relation(%d) = %+v, %v; want the new description", relItems, r, ok)
	}
	// The old column count is gone: a three-column relation does not take two.
	feed(encBegin(0x30, 2))
	if _, err := d.Decode(encInsert(relItems, text("3"), text("c"))); !errors.Is(err, cdc.ErrProtocol) {
		t.Errorf("two-column tuple for a three-column relation: err %v, want ErrProtocol", err)
	}
}

func TestDecoderKeylessAndToast(t *testing.T) {
	d := cdc.NewDecoder()
	d.SetPrimaryKey("public", "full", []string{"id"})
	txs := decodeWith(t, d,
		logRel, fullRel, itemsRel,
		encBegin(0x10, 1),
		// REPLICA IDENTITY NOTHING: no key columns, no key.
		encInsert(relLog, text("hello")),
		// REPLICA IDENTITY FULL: every column is an identity column and the old row
		// comes whole, but the key is the primary key; an unchanged TOAST value of the
		// new row is taken from the old one.
		encUpdate(relFull, 'O', []val{text("7"), text("big")}, []val{text("7"), toast}),
		// A changed non-key value is not a key change...
		encUpdate(relFull, 'O', []val{text("7"), text("big")}, []val{text("7"), text("bigger")}),
		// ... a changed primary key is.
		encUpdate(relFull, 'O', []val{text("7"), text("big")}, []val{text("8"), text("big")}),
		// A null key value: the key is unknown.
		encInsert(relFull, null, text("x")),
		encDelete(relFull, 'O', text("8"), null),
		// An unchanged TOAST key value without an old row to take it from.
		encUpdate(relFull, 0, nil, []val{toast, text("y")}),
		// Non-key columns may be TOAST or null without harm.
		encUpdate(relItems, 0, nil, []val{text("1"), toast}),
		encCommit(0x10, 0x20),
	)
	got := describeAll(txs[0].Changes)
	want := []string{
		`insert public.log []`,
		`update public.full ["7"]`,
		`update public.full ["7"]`,
		`update public.full ["8"] from ["7"]`,
		`insert public.full []`,
		`delete public.full ["8"]`,
		`update public.full []`,
		`update public.items ["1"]`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i, c := range txs[0].Changes {
		if (i == 0 || i == 4 || i == 6) && c.Key != nil {
			t.Errorf("change %d: key %q, want nil", i, c.Key)
		}
	}
}

// TestDecoderPrimaryKey: the key is the primary key whatever the replica identity, in
// column order, and unknown where the decoder cannot tell it.
func TestDecoderPrimaryKey(t *testing.T) {
	const (
		relIdx   = 16430
		relLines = 16431
		relAnon  = 16432
	)
	// USING INDEX on (email): the old row carries the email only.
	idxRel := encRelation(relIdx, "app", "users", 'i', col{"id", oidInt8, false}, col{"email", oidText, true})
	// A composite key declared (order_id, line_no) on columns (line_no, order_id, qty).
	linesRel := encRelation(relLines, "public", "lines", 'd', col{"line_no", oidInt4, true}, col{"order_id", oidInt8, true}, col{"qty", oidInt4, false})
	// FULL, and the decoder was not told the primary key.
	anonRel := encRelation(relAnon, "public", "anon", 'f', col{"id", oidInt8, true}, col{"v", oidText, true})
	d := cdc.NewDecoder()
	d.SetPrimaryKey("app", "users", []string{"id"})
	d.SetPrimaryKey("public", "lines", []string{"order_id", "line_no"})
	txs := decodeWith(t, d,
		idxRel, linesRel, anonRel,
		encBegin(0x10, 1),
		encInsert(relIdx, text("1"), text("a@b.c")),
		encUpdate(relIdx, 'K', []val{null, text("a@b.c")}, []val{text("1"), text("x@b.c")}),
		encDelete(relIdx, 'K', null, text("x@b.c")),
		encInsert(relLines, text("2"), text("1"), text("5")),
		encUpdate(relLines, 'K', []val{text("2"), text("1"), null}, []val{text("3"), text("1"), text("5")}),
		encInsert(relAnon, text("1"), text("v")),
		encCommit(0x10, 0x20),
	)
	got := describeAll(txs[0].Changes)
	want := []string{
		`insert app.users ["1"]`,
		`update app.users []`, // the old row's primary key is unknown
		`delete app.users []`,
		`insert public.lines ["2" "1"]`,
		`update public.lines ["3" "1"] from ["2" "1"]`,
		`insert public.anon []`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	rel, _ := d.Relation(relLines)
	var names []string
	for _, c := range rel.KeyColumns() {
		names = append(names, c.Name)
	}
	if !reflect.DeepEqual(names, []string{"line_no", "order_id"}) {
		t.Errorf("KeyColumns %q, want line_no, order_id (column order)", names)
	}
}

// TestDecoderPartitions: changes of partitions arrive under their names and are
// reported as changes of their partitioned table; a relation the catalog did not list is
// an error, so that the stream reads the catalog again.
func TestDecoderPartitions(t *testing.T) {
	const (
		relP1    = 16440
		relP2    = 16441
		relNew   = 16442
		relOther = 16443
	)
	newDecoder := func() *cdc.Decoder {
		d := cdc.NewDecoder()
		d.SetPrimaryKey("public", "events", []string{"id"})
		d.SetPrimaryKey("public", "events_2025", []string{"id"})
		d.SetPrimaryKey("public", "events_2026", []string{"id"})
		d.SetPartitions("public", "events", [][2]string{{"public", "events_2025"}, {"public", "events_2026"}})
		d.SetOthers([][2]string{{"public", "other"}})
		return d
	}
	rel := func(id uint32, name string) []byte {
		return encRelation(id, "public", name, 'd', col{"v", oidText, false}, col{"id", oidInt8, true})
	}
	txs := decodeWith(t, newDecoder(),
		rel(relP1, "events_2025"), rel(relP2, "events_2026"), rel(relOther, "other"),
		encBegin(0x10, 1),
		encInsert(relP1, text("a"), text("1")),
		encDelete(relP2, 'K', null, text("2")),
		encCommit(0x10, 0x20),
		encBegin(0x30, 2),
		encTruncate(0, relP1, relP2, relOther),
		encCommit(0x30, 0x40),
	)
	for i, want := range [][]string{
		{`insert public.events ["1"]`, `delete public.events ["2"]`},
		{`truncate public.events []`, `truncate public.other []`},
	} {
		if got := describeAll(txs[i].Changes); !reflect.DeepEqual(got, want) {
			t.Errorf("tx %d: %q, want %q", i, got, want)
		}
	}
	if _, err := newDecoder().Decode(rel(relNew, "events_2027")); !errors.Is(err, cdc.ErrCatalogChanged) {
		t.Errorf("relation the catalog did not list: err %v, want ErrCatalogChanged", err)
	}
	d := cdc.NewDecoder() // without partitioned tables, unknown relations pass
	if _, err := d.Decode(rel(relNew, "events_2027")); err != nil {
		t.Errorf("unknown relation without partitioned tables: %v", err)
	}
}

func TestDecoderCatalogNamespace(t *testing.T) {
	txs := decodeAll(t,
		encRelation(1259, "", "pg_class", 'n', col{"oid", 26, false}),
		encBegin(0x10, 1),
		encInsert(1259, text("1")),
		encCommit(0x10, 0x20),
	)
	if s := txs[0].Changes[0].Relation.Schema; s != "pg_catalog" {
		t.Errorf("schema %q, want pg_catalog (pgoutput sends it as the empty string)", s)
	}
}

func TestDecoderErrors(t *testing.T) {
	begin := encBegin(0x10, 1)
	for _, tc := range []struct {
		name string
		msgs [][]byte
	}{
		{"empty message", [][]byte{{}}},
		{"unknown type", [][]byte{{'Z', 0}}},
		{"stream start (protocol v2)", [][]byte{msg{'S'}.u32(1).u8(1)}},
		{"short begin", [][]byte{encBegin(0x10, 1)[:15]}},
		{"begin with trailing bytes", [][]byte{append(encBegin(0x10, 1), 0)}},
		{"begin inside a transaction", [][]byte{begin, begin}},
		{"commit outside a transaction", [][]byte{encCommit(0x10, 0x20)}},
		{"short commit", [][]byte{begin, encCommit(0x10, 0x20)[:20]}},
		{"insert outside a transaction", [][]byte{itemsRel, encInsert(relItems, text("1"), null)}},
		{"truncate outside a transaction", [][]byte{itemsRel, encTruncate(0, relItems)}},
		{"origin outside a transaction", [][]byte{encOrigin(1, "x")}},
		{"unknown relation", [][]byte{begin, encInsert(relItems, text("1"), null)}},
		{"truncate of an unknown relation", [][]byte{itemsRel, begin, encTruncate(0, relItems, 4242)}},
		{"truncate count beyond the message", [][]byte{begin, msg{'T'}.u32(1 << 30).u8(0).u32(1)}},
		{"relation name not terminated", [][]byte{msg{'R'}.u32(1).raw('p', 'u', 'b')}},
		{"relation column count beyond the message", [][]byte{msg{'R'}.u32(1).str("s").str("t").u8('d').u16(65535).raw(0)}},
		{"relation truncated in a column", [][]byte{itemsRel[:len(itemsRel)-3]}},
		{"tuple with too few columns", [][]byte{itemsRel, begin, encInsert(relItems, text("1"))}},
		{"tuple with too many columns", [][]byte{itemsRel, begin, encInsert(relItems, text("1"), null, null)}},
		{"unknown value kind", [][]byte{itemsRel, begin, encInsert(relItems, text("1"), val{kind: 'x'})}},
		{"value longer than the message", [][]byte{itemsRel, begin, msg{'I'}.u32(relItems).u8('N').u16(2).u8('t').u32(0xfffffff0).raw('1')}},
		{"value length cut", [][]byte{itemsRel, begin, msg{'I'}.u32(relItems).u8('N').u16(2).u8('t').raw(0, 0)}},
		{"insert with an old tuple", [][]byte{itemsRel, begin, msg{'I'}.u32(relItems).u8('K').tuple([]val{text("1"), null})}},
		{"update old tuple without new", [][]byte{itemsRel, begin, msg{'U'}.u32(relItems).u8('K').tuple([]val{text("1"), null}).u8('X')}},
		{"update cut after the old tuple", [][]byte{itemsRel, begin, msg{'U'}.u32(relItems).u8('K').tuple([]val{text("1"), null})}},
		{"delete without an old tuple", [][]byte{itemsRel, begin, msg{'D'}.u32(relItems).u8('N').tuple([]val{text("1"), null})}},
		{"insert with trailing bytes", [][]byte{itemsRel, begin, append(encInsert(relItems, text("1"), null), 'x')}},
		{"logical message content beyond the message", [][]byte{msg{'M'}.u8(0).u64(1).str("p").u32(100).raw('a')}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := cdc.NewDecoder()
			var err error
			for _, m := range tc.msgs {
				if _, err = d.Decode(m); err != nil {
					break
				}
			}
			if !errors.Is(err, cdc.ErrProtocol) {
				t.Fatalf("err = %v, want ErrProtocol", err)
			}
			if testing.Verbose() {
				t.Log(err)
			}
			if cdc.IsFatal(err) {
				t.Errorf("a protocol error is fatal: %v", err)
			}
		})
	}
}

func TestChangeKindString(t *testing.T) {
	for k, want := range map[cdc.ChangeKind]string{
		cdc.Insert: "insert", cdc.Update: "update", cdc.Delete: "delete", cdc.Truncate: "truncate", 0: "ChangeKind(0)", 9: "ChangeKind(9)",
	} {
		if got := k.String(); got != want {
			t.Errorf("ChangeKind(%d).String() = %q, want %q", uint8(k), got, want)
		}
	}
}

// TestDecoderMaxChanges: past the bound, a transaction keeps one keyless change per table.
func TestDecoderMaxChanges(t *testing.T) {
	d := cdc.NewDecoder()
	d.SetMaxChanges(3)
	msgs := [][]byte{itemsRel, fullRel, encBegin(0x10, 1)}
	for i := range 5 {
		msgs = append(msgs, encInsert(relItems, text(fmt.Sprint(i)), text("x")))
	}
	msgs = append(msgs, encInsert(relFull, text("1"), text("y")), encTruncate(0, relItems), encCommit(0x10, 0x20),
		encBegin(0x30, 2), encInsert(relItems, text("9"), text("x")), encCommit(0x30, 0x40))
	txs := decodeWith(t, d, msgs...)
	want := []string{`insert public.items []`, `insert public.full []`, `truncate public.items []`}
	if got := describeAll(txs[0].Changes); !txs[0].Whole || !reflect.DeepEqual(got, want) {
		t.Errorf("large transaction: whole %v, changes %q; want whole, %q", txs[0].Whole, got, want)
	}
	if got := describeAll(txs[1].Changes); txs[1].Whole || !reflect.DeepEqual(got, []string{`insert public.items ["9"]`}) {
		t.Errorf("the next transaction: whole %v, changes %q; want its row", txs[1].Whole, got)
	}
}

// TestDecoderLargeTransactionMemory: a transaction of many rows takes bounded memory
// while it is decoded; without the bound (the control) it takes memory per row.
func TestDecoderLargeTransactionMemory(t *testing.T) {
	const rows = 200000
	inUse := func(limit int) uint64 {
		d := cdc.NewDecoder()
		d.SetMaxChanges(limit)
		if _, err := d.Decode(itemsRel); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Decode(encBegin(0x10, 1)); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range rows {
			if _, err := d.Decode(encInsert(relItems, text(fmt.Sprintf("%020d", i)), text("x"))); err != nil {
				t.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(d)
		return after.HeapInuse - min(after.HeapInuse, before.HeapInuse)
	}
	bounded, unbounded := inUse(1000), inUse(0)
	t.Logf("heap in use after %d rows: %d bytes bounded, %d unbounded", rows, bounded, unbounded)
	if unbounded < 10<<20 {
		t.Fatalf("control: without a bound %d rows took only %d bytes; the test cannot tell", rows, unbounded)
	}
	if bounded > 2<<20 {
		t.Errorf("with a bound of 1000 changes, %d rows took %d bytes", rows, bounded)
	}
}

// BenchmarkDecoderChanges decodes a transaction of 100 inserts and 100 updates of a
// four-column row.
func BenchmarkDecoderChanges(b *testing.B) {
	const relWide = 16450
	wideRel := encRelation(relWide, "public", "wide", 'd', col{"id", oidInt8, true}, col{"email", oidText, false},
		col{"order_id", oidInt8, false}, col{"note", oidText, false})
	var msgs [][]byte
	for i := range 100 {
		id := fmt.Sprint(i)
		msgs = append(msgs, encInsert(relWide, text(id), text("user"+id+"@example.com"), text("42"), text("a note of some length")),
			encUpdate(relWide, 0, nil, []val{text(id), text("user" + id + "@example.org"), text("43"), toast}))
	}
	d := cdc.NewDecoder()
	if _, err := d.Decode(wideRel); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode(encBegin(0x10, 1)); err != nil {
			b.Fatal(err)
		}
		for _, m := range msgs {
			if _, err := d.Decode(m); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := d.Decode(encCommit(0x10, 0x20)); err != nil {
			b.Fatal(err)
		}
	}
}

// rowsOf renders a change's rows as "new / old" for comparison.
func rowsOf(c cdc.Change) string { return c.New.String() + " / " + c.Old.String() }

// TestDecoderRows: a change carries the new row's values and, where the message has
// it, the old row's, telling a value from NULL, an unchanged TOAST value, a value too
// long to keep and a column the old row does not send.
func TestDecoderRows(t *testing.T) {
	const relUsers = 16460
	// Columns id (primary key), email, org_id; the USING INDEX variant marks email.
	usersRel := func(identity byte, keyCols ...string) []byte {
		cols := []col{{"id", oidInt8, false}, {"email", oidText, false}, {"org_id", oidInt8, false}}
		for i := range cols {
			cols[i].key = identity == 'f' || slices.Contains(keyCols, cols[i].name)
		}
		return encRelation(relUsers, "app", "users", identity, cols...)
	}
	long := strings.Repeat("x", cdc.MaxValueLen+1)
	edge := strings.Repeat("y", cdc.MaxValueLen)
	d := cdc.NewDecoder()
	d.SetPrimaryKey("app", "users", []string{"id"})
	txs := decodeWith(t, d,
		usersRel('d', "id"),
		encBegin(0x10, 1),
		encInsert(relUsers, text("1"), text("a@b.c"), null),
		encUpdate(relUsers, 0, nil, []val{text("1"), toast, text("7")}),
		// The primary key changed: the old row carries the identity (id) alone.
		encUpdate(relUsers, 'K', []val{text("1"), null, null}, []val{text("2"), text("a@b.c"), text("7")}),
		encDelete(relUsers, 'K', text("2"), null, null),
		encInsert(relUsers, text("3"), text(long), text(edge)),
		encInsert(relUsers, text("4"), val{kind: 'b', text: "\x01"}, text("")),
		encTruncate(0, relUsers),
		encCommit(0x10, 0x20),
		// REPLICA IDENTITY FULL: the old row comes whole, nulls are nulls.
		usersRel('f'),
		encBegin(0x30, 2),
		encUpdate(relUsers, 'O', []val{text("3"), text("a@b.c"), null}, []val{text("3"), text("d@e.f"), null}),
		encDelete(relUsers, 'O', text("3"), text("d@e.f"), null),
		encCommit(0x30, 0x40),
		// USING INDEX on email: the old row carries the email alone.
		usersRel('i', "email"),
		encBegin(0x50, 3),
		encUpdate(relUsers, 'K', []val{null, text("d@e.f"), null}, []val{text("3"), text("g@h.i"), text("8")}),
		encCommit(0x50, 0x60),
	)
	var got []string
	for _, tx := range txs {
		for _, c := range tx.Changes {
			got = append(got, c.Kind.String()+" "+rowsOf(c))
		}
	}
	want := []string{
		`insert ("1" "a@b.c" NULL) / ()`,
		`update ("1" <unchanged toast> "7") / ()`,
		`update ("2" "a@b.c" "7") / ("1" <not sent> <not sent>)`,
		`delete () / ("2" <not sent> <not sent>)`,
		`insert ("3" <not kept> "` + edge + `") / ()`,
		`insert ("4" <not kept> "") / ()`,
		`truncate () / ()`,
		`update ("3" "d@e.f" NULL) / ("3" "a@b.c" NULL)`,
		`delete () / ("3" "d@e.f" NULL)`,
		`update ("3" "g@h.i" "8") / (<not sent> "d@e.f" <not sent>)`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The keys are as before: the USING INDEX update's old key is unknown, so its key is.
	if got := describeAll(txs[2].Changes); !reflect.DeepEqual(got, []string{`update app.users []`}) {
		t.Errorf("USING INDEX update: %q", got)
	}
	c := txs[0].Changes[0]
	if v := c.New.Value(1); v != (cdc.Value{Kind: cdc.ValueText, Text: "a@b.c"}) {
		t.Errorf("Value(1) = %+v", v)
	}
	if c.New.Len() != 3 || c.Old.Len() != 0 {
		t.Errorf("insert: New.Len %d, Old.Len %d; want 3, 0", c.New.Len(), c.Old.Len())
	}
}

// TestDecoderRowBytesBound: a transaction keeps at most a bounded amount of row
// values; the rows of its further changes are not kept, their keys are.
func TestDecoderRowBytesBound(t *testing.T) {
	value := strings.Repeat("v", cdc.MaxValueLen)
	msgs := [][]byte{itemsRel, encBegin(0x10, 1)}
	const rows = 10000 // 40 MB of values, past the 32 MB bound
	for i := range rows {
		msgs = append(msgs, encInsert(relItems, text(fmt.Sprint(i)), text(value)))
	}
	msgs = append(msgs, encCommit(0x10, 0x20))
	tx := decodeAll(t, msgs...)[0]
	if tx.Whole || len(tx.Changes) != rows {
		t.Fatalf("whole %v, %d changes; want %d row changes", tx.Whole, len(tx.Changes), rows)
	}
	first, last := tx.Changes[0], tx.Changes[rows-1]
	if v := first.New.Value(1); v.Kind != cdc.ValueText || v.Text != value {
		t.Errorf("first change keeps no value: %v", v.Kind)
	}
	if v := last.New.Value(1); v.Kind != cdc.ValueNotKept {
		t.Errorf("last change: value kind %v, want not kept", v.Kind)
	}
	if want := fmt.Sprint(rows - 1); !reflect.DeepEqual(last.Key, []string{want}) {
		t.Errorf("last change: key %q, want [%q]", last.Key, want)
	}
}

func TestValueKindString(t *testing.T) {
	for k, want := range map[cdc.ValueKind]string{
		cdc.ValueText: "text", cdc.ValueNull: "null", cdc.ValueUnchangedTOAST: "unchanged toast",
		cdc.ValueNotKept: "not kept", cdc.ValueNotSent: "not sent", 0: "ValueKind(0)",
	} {
		if got := k.String(); got != want {
			t.Errorf("ValueKind(%d).String() = %q, want %q", uint8(k), got, want)
		}
	}
}

// TestDecoderDomains: a domain column's values are spelled as its base type's.
func TestDecoderDomains(t *testing.T) {
	const (
		relCodes  = 16470
		oidBpchar = 1042
		oidCode4  = 90001 // a domain over char(4)
		oidMood   = 90002 // an enum: no base type
	)
	d := cdc.NewDecoder()
	d.SetDomains(map[uint32]uint32{oidCode4: oidBpchar})
	txs := decodeWith(t, d,
		encRelation(relCodes, "public", "codes", 'd', col{"id", oidInt8, true}, col{"code", oidCode4, false}, col{"mood", oidMood, false}),
		encBegin(0x10, 1), encInsert(relCodes, text("1"), text("ab  "), text("happy")), encCommit(0x10, 0x20))
	cols := txs[0].Changes[0].Relation.Columns
	if cols[1].TypeOID != oidCode4 || cols[1].BaseTypeOID != oidBpchar || cols[2].BaseTypeOID != oidMood || cols[0].BaseTypeOID != oidInt8 {
		t.Errorf("columns %+v: want the domain's base type, the others' own", cols)
	}
}
