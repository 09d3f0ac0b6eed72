package invalidator

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
)

// BenchmarkPlan measures building the keys of 200 one-row UPDATEs (of a table with one
// version cached and, in the lookup variant, one lookup announced): the invalidator's
// work per change before Redis. It needs no server: nothing is sent.
func BenchmarkPlan(b *testing.B) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer rdb.Close()
	v, err := New(rdb, Options{Prefix: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	txs := planTxs(b, 200)
	table := keys.QualifiedTable("public", "wide")
	lookup, err := keys.NewLookup(keys.Unique, "email")
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		a    announced
	}{
		{"rows", announced{versions: map[string][]string{table: {"v1"}}}},
		{"rows+lookup", announced{versions: map[string][]string{table: {"v1"}},
			lookups: map[string][]store.VersionLookup{table: {{Version: "v1", Lookup: lookup}}}}},
		{"nothing-announced", announced{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if p := v.plan(txs, c.a); len(p.keys) == 0 && c.a.versions != nil {
					b.Fatal("no key planned")
				}
			}
		})
	}
}

// planTxs decodes n UPDATEs of a table (id bigint primary key, email text, order_id
// bigint, note text), one transaction each.
func planTxs(b *testing.B, n int) []*cdc.Tx {
	b.Helper()
	u32 := func(m []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(m, v) }
	u16 := func(m []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(m, v) }
	u64 := func(m []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(m, v) }
	str := func(m []byte, s string) []byte { return append(append(m, s...), 0) }
	const relID = 16450
	rel := u32([]byte{'R'}, relID)
	rel = append(str(str(rel, "public"), "wide"), 'd')
	rel = u16(rel, 4)
	for i, c := range []struct {
		name string
		oid  uint32
	}{{"id", 20}, {"email", 25}, {"order_id", 20}, {"note", 25}} {
		var flags byte
		if i == 0 {
			flags = 1
		}
		rel = str(append(rel, flags), c.name)
		rel = u32(u32(rel, c.oid), 0xffffffff)
	}
	d := cdc.NewDecoder()
	d.SetPrimaryKey("public", "wide", []string{"id"})
	if _, err := d.Decode(rel); err != nil {
		b.Fatal(err)
	}
	var txs []*cdc.Tx
	for i := range n {
		if _, err := d.Decode(u32(u64(u64([]byte{'B'}, 0x10), 0), uint32(i))); err != nil {
			b.Fatal(err)
		}
		id := fmt.Sprint(i)
		m := append(u32([]byte{'U'}, relID), 'N')
		m = u16(m, 4)
		for _, s := range []string{id, "user" + id + "@example.org", "43", "a note of some length"} {
			m = append(u32(append(m, 't'), uint32(len(s))), s...)
		}
		if _, err := d.Decode(m); err != nil {
			b.Fatal(err)
		}
		tx, err := d.Decode(u64(u64(u64(append([]byte{'C'}, 0), 0x10), 0x20), 0))
		if err != nil || tx == nil {
			b.Fatal(tx, err)
		}
		txs = append(txs, tx)
	}
	return txs
}
