package invalidator

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/jackc/pglogrepl"
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

// BenchmarkReplay replays a backlog as the walsender streams it (100 transactions of
// 100 one-row UPDATE messages each, every message framed as XLogData) through the
// decoder and the plan of the whole batch, as the worker receives and handles it: the
// worker's CPU per row before the network and Redis. It needs no server.
func BenchmarkReplay(b *testing.B) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer rdb.Close()
	v, err := New(rdb, Options{Prefix: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	const txs, rows = 100, 100
	stream := xlogData(pgoutput(txs, rows))
	a := announced{versions: map[string][]string{keys.QualifiedTable("public", "wide"): {"v1"}}}
	b.ReportAllocs()
	for b.Loop() {
		d := newWideDecoder()
		batch := make([]*cdc.Tx, 0, txs)
		for _, m := range stream {
			xld, err := pglogrepl.ParseXLogData(m[1:])
			if err != nil {
				b.Fatal(err)
			}
			tx, err := d.Decode(xld.WALData)
			if err != nil {
				b.Fatal(err)
			}
			if tx != nil {
				batch = append(batch, tx)
			}
		}
		if p := v.plan(batch, a); len(p.keys) != txs*rows {
			b.Fatalf("%d keys planned, want %d", len(p.keys), txs*rows)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*txs*rows), "ns/row")
}

// planTxs decodes n UPDATEs of a table (id bigint primary key, email text, order_id
// bigint, note text), one transaction each.
func planTxs(b *testing.B, n int) []*cdc.Tx {
	b.Helper()
	d := newWideDecoder()
	var txs []*cdc.Tx
	for _, m := range pgoutput(n, 1) {
		tx, err := d.Decode(m)
		if err != nil {
			b.Fatal(err)
		}
		if tx != nil {
			txs = append(txs, tx)
		}
	}
	return txs
}

const wideRelID = 16450

// newWideDecoder returns a decoder told the primary key of the table pgoutput changes.
func newWideDecoder() *cdc.Decoder {
	d := cdc.NewDecoder()
	d.SetPrimaryKey("public", "wide", []string{"id"})
	return d
}

// pgoutput returns the pgoutput messages of txs transactions of rows UPDATEs each of
// the table public.wide (id bigint primary key, email text, order_id bigint, note
// text), the relation described before the first: BEGIN, RELATION, UPDATE..., COMMIT.
func pgoutput(txs, rows int) [][]byte {
	u32 := func(m []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(m, v) }
	u16 := func(m []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(m, v) }
	u64 := func(m []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(m, v) }
	str := func(m []byte, s string) []byte { return append(append(m, s...), 0) }
	rel := u32([]byte{'R'}, wideRelID)
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
	var msgs [][]byte
	for i := range txs {
		lsn := uint64(i+1) << 16
		msgs = append(msgs, u32(u64(u64([]byte{'B'}, lsn), 0), uint32(i)))
		if i == 0 {
			msgs = append(msgs, rel)
		}
		for r := range rows {
			id := fmt.Sprint(i*rows + r)
			m := append(u32([]byte{'U'}, wideRelID), 'N')
			m = u16(m, 4)
			for _, s := range []string{id, "user" + id + "@example.org", "43", "a note of some length"} {
				m = append(u32(append(m, 't'), uint32(len(s))), s...)
			}
			msgs = append(msgs, m)
		}
		msgs = append(msgs, u64(u64(u64(append([]byte{'C'}, 0), lsn), lsn+0x10), 0))
	}
	return msgs
}

// xlogData frames each message as the walsender sends it in a CopyData message: 'w',
// the WAL start and end (set on a commit only) and the send time.
func xlogData(msgs [][]byte) [][]byte {
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		f := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64([]byte{'w'}, 0), 0), 0)
		out[i] = append(f, m...)
	}
	return out
}
