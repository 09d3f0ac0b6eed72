package cdc_test

import "encoding/binary"

// Encoders of pgoutput protocol version 1 messages, as the server writes them
// (src/backend/replication/logical/proto.c). pglogrepl only decodes.

type col struct {
	name string
	oid  uint32
	key  bool
}

// val is one column of a TupleData: kind 't' with text, 'n' null, 'u' unchanged TOAST.
type val struct {
	kind byte
	text string
}

func text(s string) val { return val{kind: 't', text: s} }

var (
	null  = val{kind: 'n'}
	toast = val{kind: 'u'}
)

type msg []byte

func (m msg) u8(b byte) msg     { return append(m, b) }
func (m msg) u16(v uint16) msg  { return binary.BigEndian.AppendUint16(m, v) }
func (m msg) u32(v uint32) msg  { return binary.BigEndian.AppendUint32(m, v) }
func (m msg) u64(v uint64) msg  { return binary.BigEndian.AppendUint64(m, v) }
func (m msg) str(s string) msg  { return append(append(m, s...), 0) }
func (m msg) raw(b ...byte) msg { return append(m, b...) }
func (m msg) tuple(vs []val) msg {
	m = m.u16(uint16(len(vs)))
	for _, v := range vs {
		m = m.u8(v.kind)
		if v.kind == 't' || v.kind == 'b' {
			m = m.u32(uint32(len(v.text)))
			m = append(m, v.text...)
		}
	}
	return m
}

// pgMicros is 2024-01-02 03:04:05.000006 UTC in microseconds since 2000-01-01.
const pgMicros = 757479845000006

func encBegin(finalLSN uint64, xid uint32) []byte {
	return msg{'B'}.u64(finalLSN).u64(pgMicros).u32(xid)
}

func encCommit(commitLSN, endLSN uint64) []byte {
	return msg{'C'}.u8(0).u64(commitLSN).u64(endLSN).u64(pgMicros)
}

func encRelation(id uint32, schema, name string, identity byte, cols ...col) []byte {
	m := msg{'R'}.u32(id).str(schema).str(name).u8(identity).u16(uint16(len(cols)))
	for _, c := range cols {
		var flags byte
		if c.key {
			flags = 1
		}
		m = m.u8(flags).str(c.name).u32(c.oid).u32(0xffffffff)
	}
	return m
}

func encInsert(rel uint32, vs ...val) []byte {
	return msg{'I'}.u32(rel).u8('N').tuple(vs)
}

// encUpdate encodes an UPDATE; oldKind 0 means no old tuple, else 'K' or 'O'.
func encUpdate(rel uint32, oldKind byte, old, cur []val) []byte {
	m := msg{'U'}.u32(rel)
	if oldKind != 0 {
		m = m.u8(oldKind).tuple(old)
	}
	return m.u8('N').tuple(cur)
}

func encDelete(rel uint32, oldKind byte, old ...val) []byte {
	return msg{'D'}.u32(rel).u8(oldKind).tuple(old)
}

func encTruncate(options byte, rels ...uint32) []byte {
	m := msg{'T'}.u32(uint32(len(rels))).u8(options)
	for _, r := range rels {
		m = m.u32(r)
	}
	return m
}

func encOrigin(lsn uint64, name string) []byte { return msg{'O'}.u64(lsn).str(name) }

func encType(oid uint32, schema, name string) []byte { return msg{'Y'}.u32(oid).str(schema).str(name) }

func encMessage(transactional bool, prefix, content string) []byte {
	var flags byte
	if transactional {
		flags = 1
	}
	return msg{'M'}.u8(flags).u64(0x100).str(prefix).u32(uint32(len(content))).raw([]byte(content)...)
}
