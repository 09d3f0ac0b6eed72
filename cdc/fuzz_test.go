package cdc_test

import (
	"encoding/binary"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/pgcache/pgcache/cdc"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus of FuzzDecoder in testdata/fuzz")

// frame joins messages into one fuzz input: each is preceded by its length (uint16).
func frame(msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(m)))
		b = append(b, m...)
	}
	return b
}

// unframe splits a fuzz input into messages; a length past the end takes the rest.
func unframe(b []byte) [][]byte {
	var msgs [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			return append(msgs, b)
		}
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		n = min(n, len(b))
		msgs = append(msgs, b[:n])
		b = b[n:]
	}
	return msgs
}

// seeds are message sequences a real server sends, and a few near misses.
func seeds() map[string][]byte {
	return map[string][]byte{
		"insert_update_delete_truncate": frame(
			encBegin(0x1000, 731), itemsRel, encInsert(relItems, text("1"), text("bolt")),
			ordersRel, encInsert(relOrders, text(uuid1), text("5"), text("1")),
			encUpdate(relItems, 'K', []val{text("1"), null}, []val{text("2"), text("nut")}),
			encDelete(relItems, 'K', text("2"), null), encTruncate(0, relItems, relOrders),
			encCommit(0x1000, 0x1040)),
		"full_identity_toast": frame(
			fullRel, encBegin(0x10, 1),
			encUpdate(relFull, 'O', []val{text("7"), text("big")}, []val{text("7"), toast}),
			encDelete(relFull, 'O', text("8"), null), encCommit(0x10, 0x20)),
		"relation_replaced": frame(
			itemsRel, encBegin(0x10, 1), encInsert(relItems, text("1"), text("a")),
			encRelation(relItems, "public", "items", 'i', col{"id", oidInt8, true}, col{"name", oidText, false}, col{"price", oidInt4, true}),
			encInsert(relItems, text("2"), text("b"), text("30")), encCommit(0x10, 0x20)),
		"origin_type_message": frame(
			logRel, encBegin(0x10, 1), encOrigin(1, "up"), encType(90000, "public", "mood"),
			encMessage(true, "p", "x"), encInsert(relLog, text("hi")), encCommit(0x10, 0x20),
			encMessage(false, "p", "y")),
		"empty_transactions": frame(encBegin(0x10, 1), encCommit(0x10, 0x20), encBegin(0x30, 2), encCommit(0x30, 0x40)),
		"huge_lengths": frame(
			itemsRel, encBegin(0x10, 1),
			msg{'I'}.u32(relItems).u8('N').u16(2).u8('t').u32(0xffffffff),
			msg{'T'}.u32(0xffffffff).u8(0),
			msg{'R'}.u32(1).str("s").str("t").u8('d').u16(0xffff)),
	}
}

func FuzzDecoder(f *testing.F) {
	seeds := seeds()
	if *updateCorpus {
		dir := filepath.Join("testdata", "fuzz", "FuzzDecoder")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			f.Fatal(err)
		}
		for name, b := range seeds {
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				f.Fatal(err)
			}
		}
	}
	for _, b := range seeds {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d := cdc.NewDecoder()
		for _, m := range unframe(b) {
			// Keep going after errors: whatever state a failed message left, the
			// next must not panic either.
			tx, err := d.Decode(m)
			if err != nil {
				if tx != nil {
					t.Fatalf("Decode returned a transaction and an error: %v", err)
				}
				continue
			}
			if tx == nil {
				continue
			}
			for i, c := range tx.Changes {
				if c.Relation == nil {
					t.Fatalf("change %d has no relation", i)
				}
				switch c.Kind {
				case cdc.Insert, cdc.Update, cdc.Delete:
					if c.Key != nil && len(c.Key) != len(c.Relation.KeyColumns()) {
						t.Fatalf("change %d: %d key values for %d key columns", i, len(c.Key), len(c.Relation.KeyColumns()))
					}
				case cdc.Truncate:
					if c.Key != nil {
						t.Fatalf("truncate with a key")
					}
				default:
					t.Fatalf("change %d: kind %v", i, c.Kind)
				}
				if c.OldKey != nil && (c.Kind != cdc.Update || c.Key == nil || len(c.OldKey) != len(c.Key)) {
					t.Fatalf("change %d: old key %q with kind %v and key %q", i, c.OldKey, c.Kind, c.Key)
				}
				checkRows(t, i, c, tx.Whole)
			}
		}
	})
}

// checkRows checks that a change's rows have a value of a known kind for every column
// of its relation, where the change can have such a row, and keep no value past
// MaxValueLen.
func checkRows(t *testing.T, i int, c cdc.Change, whole bool) {
	t.Helper()
	n := len(c.Relation.Columns)
	hasNew := !whole && (c.Kind == cdc.Insert || c.Kind == cdc.Update)
	hasOld := !whole && (c.Kind == cdc.Update || c.Kind == cdc.Delete)
	for _, r := range []struct {
		name string
		row  cdc.Row
		may  bool
	}{{"new", c.New, hasNew}, {"old", c.Old, hasOld}} {
		if l := r.row.Len(); l != 0 && (!r.may || l != n) || l == 0 && r.name == "new" && r.may && n > 0 {
			t.Fatalf("change %d (%v, whole %v): %s row of %d columns for %d", i, c.Kind, whole, r.name, l, n)
		}
		for j := range r.row.Len() {
			v := r.row.Value(j)
			if v.Kind < cdc.ValueText || v.Kind > cdc.ValueNotSent || v.Kind != cdc.ValueText && v.Text != "" || len(v.Text) > cdc.MaxValueLen {
				t.Fatalf("change %d: %s row column %d: kind %v, %d bytes", i, r.name, j, v.Kind, len(v.Text))
			}
		}
	}
	if c.Kind == cdc.Delete && !whole && c.Old.Len() != n {
		t.Fatalf("change %d: delete without its old row", i)
	}
}
