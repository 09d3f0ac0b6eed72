package httpcache

import (
	"encoding/binary"
	"errors"
	"net/http"
	"slices"

	"github.com/pgcache/pgcache/internal/store"
)

// entry is a cached response.
type entry struct {
	identity []byte
	status   int
	header   http.Header
	body     []byte
	stored   int64       // Unix ms
	deps     []store.Dep // stored by the store beside the entry (store.PutResponse)
	tags     []string
}

// entryVersion starts every encoded entry; another value is a miss. Version 1 held
// the dependencies, which the store now keeps.
const entryVersion = 2

func (e *entry) encode() []byte {
	n := 64 + len(e.identity) + len(e.body)
	b := make([]byte, 0, n)
	b = append(b, entryVersion)
	b = field(b, string(e.identity))
	b = binary.AppendUvarint(b, uint64(e.status))
	b = binary.AppendVarint(b, e.stored)
	names := make([]string, 0, len(e.header))
	for k := range e.header {
		names = append(names, k)
	}
	slices.Sort(names)
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, k := range names {
		b = field(b, k)
		b = binary.AppendUvarint(b, uint64(len(e.header[k])))
		for _, v := range e.header[k] {
			b = field(b, v)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(e.tags)))
	for _, t := range e.tags {
		b = field(b, t)
	}
	return field(b, string(e.body))
}

var errEntry = errors.New("httpcache: bad entry")

type reader struct {
	b   []byte
	err error
}

func (r *reader) uint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errEntry
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) int() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errEntry
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = errEntry
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// count reads a count of items each at least one byte long.
func (r *reader) count() int {
	n := r.uint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = errEntry
		return 0
	}
	return int(n)
}

func decodeEntry(b []byte) (*entry, error) {
	if len(b) == 0 || b[0] != entryVersion {
		return nil, errEntry
	}
	r := &reader{b: b[1:]}
	e := &entry{}
	e.identity = r.bytes()
	e.status = int(r.uint())
	e.stored = r.int()
	nh := r.count()
	e.header = make(http.Header, nh)
	for i := 0; i < nh && r.err == nil; i++ {
		k := string(r.bytes())
		nv := r.count()
		vs := make([]string, 0, nv)
		for j := 0; j < nv && r.err == nil; j++ {
			vs = append(vs, string(r.bytes()))
		}
		e.header[k] = vs
	}
	nt := r.count()
	e.tags = make([]string, 0, nt)
	for i := 0; i < nt && r.err == nil; i++ {
		e.tags = append(e.tags, string(r.bytes()))
	}
	e.body = r.bytes()
	if r.err != nil || len(r.b) != 0 || e.status < 100 || e.status > 999 {
		return nil, errEntry
	}
	return e, nil
}
