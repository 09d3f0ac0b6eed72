package readthrough

import (
	"strings"

	"github.com/pgcache/pgcache/internal/store"
)

// withShape returns reg announcing the shape of m's entries (store.Shape): the codec,
// the columns of the record in order, and the key's columns in the key's order. The
// worker's coherence auditor reads it to decode entries without the Go type.
func withShape(reg store.Model, m *model, codec Codec) (store.Model, error) {
	fields := mappedFields(m.schema)
	sh := store.Shape{Codec: codec.Name(), Columns: make([]string, len(fields)), Key: make([]string, len(m.pk))}
	for i, f := range fields {
		sh.Columns[i] = f.DBName
	}
	for j, i := range m.order {
		sh.Key[j] = m.pk[i].DBName
	}
	version := m.space.Version()
	if m.envelope != "" {
		version = strings.TrimSuffix(strings.TrimPrefix(m.envelope, "@"), ":")
	}
	return reg.WithShape(version, sh)
}
