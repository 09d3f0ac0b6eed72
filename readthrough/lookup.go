package readthrough

import (
	"context"
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"

	"github.com/pgcache/pgcache/keys"
)

// Lookups: reads by unique values (By) and has-many lists (ListBy).
//
// An entry maps the values asked for to primary keys: a unique entry to the primary
// key of the one visible row that holds them, or to "absent"; a list entry to the
// primary keys of the visible rows that hold them, ordered by primary key, at most
// ModelOptions.ListCap of them. "Visible" is GORM's default scope: not soft-deleted.
// The rows themselves come through the primary-key path (Get, GetMany), and are
// checked against the values asked for: a row that no longer exists, is not visible,
// or holds other values means the entry is stale, so it is deleted (if unchanged),
// counted in Stats.Unique.Stale or Stats.List.Stale, and filled again; the second
// time the answer comes from Postgres directly. So a row that leaves an entry's set
// needs no invalidation. A row that enters one (an insert, an update to the values)
// does: writes through the library delete the entries named by the written row's
// values after the commit, and the invalidator those named by a change's new values.
//
// Entries are filled like rows: under a lease on the entry's fence (announcing the
// lookup in the lookup registry, so the invalidator knows it), loaded after the lease,
// stored only if no invalidation came in between. Concurrent misses of one entry in a
// process share one fill, under the read-your-writes rule of miss. While the model
// misses (flights.combine) a lookup reads no entry first: the fill reads it or takes
// its lease in one round trip (fillLookup), so a miss costs two.
//
// Entry bytes (the key's version is the model's, so a model change moves them too):
//
//	'n'                                   no visible row (unique), cached NegativeTTL
//	'k' <pk>                              the row's primary key (unique)
//	'l' <uvarint count> <pk>...           the members' primary keys, in order (list)
//
// where <pk> is, for each primary-key field in declared order, a uvarint length and
// the value's canonical bytes (keys.FromGo).

// Errors of lookups.
var (
	// ErrNotUnique reports a unique lookup that found several visible rows holding
	// the values (possible with a partial unique index, or an index not yet valid):
	// the lookup answers with none rather than a random one.
	ErrNotUnique = errors.New("readthrough: several rows hold the values of a unique lookup")
	// ErrNotRegistered reports By or ListBy over fields not registered in
	// ModelOptions.Unique or ModelOptions.Lists.
	ErrNotRegistered = errors.New("readthrough: lookup not registered")
	// ErrNullLookup reports a lookup by NULL (a nil value): NULL equals nothing in
	// SQL, and no entry is named by it.
	ErrNullLookup = errors.New("readthrough: lookup by NULL")
)

const (
	entryKey  = 'k'
	entryList = 'l'
)

// lookupQuery is one read of a lookup: its entry key and the caller's values.
type lookupQuery struct {
	def *lookupDef
	key keys.Key
	// vals are the caller's values in the key's column order (def.fields').
	vals []any
	// canon are their canonical forms, in the same order.
	canon []string
}

// query builds the read of def by val: one value, or []any of them in the order
// of the caller's fields, which perm maps to the key's order.
func (r *Repository[T]) query(def *lookupDef, perm []int, val any) (lookupQuery, error) {
	given := []any{val}
	if def.id.Len() > 1 {
		vs, ok := val.([]any)
		if !ok || len(vs) != def.id.Len() {
			return lookupQuery{}, fmt.Errorf("readthrough: %s lookup %s of %s: pass the values as []any with %d values, in the order of the fields given to By or ListBy; got %T",
				def.id.Kind(), def.id, r.model.schema.Name, def.id.Len(), val)
		}
		given = vs
	}
	q := lookupQuery{def: def, vals: make([]any, len(given)), canon: make([]string, len(given))}
	for j, i := range perm {
		v := given[i]
		if isNull(v) {
			return lookupQuery{}, fmt.Errorf("%w: %s lookup %s of %s, column %s: NULL matches no row in SQL; test for it with a query of your own",
				ErrNullLookup, def.id.Kind(), def.id, r.model.schema.Name, def.fields[j].DBName)
		}
		c, err := keys.FromGo(def.kinds[j], v)
		if err != nil {
			return lookupQuery{}, fmt.Errorf("readthrough: %s lookup %s of %s, column %s: %w", def.id.Kind(), def.id, r.model.schema.Name, def.fields[j].DBName, err)
		}
		q.vals[j], q.canon[j] = v, c
	}
	q.key = r.model.space.LookupKey(def.id, q.canon...)
	return q, nil
}

// isNull reports whether v is what the database stores as NULL.
func isNull(v any) bool {
	for range 16 {
		if v == nil {
			return true
		}
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Pointer && rv.IsNil() {
			return true
		}
		dv, ok := v.(driver.Valuer)
		if !ok {
			if rv.Kind() == reflect.Pointer {
				v = rv.Elem().Interface()
				continue
			}
			return false
		}
		next, err := dv.Value()
		if err != nil {
			return false // FromGo reports it
		}
		v = next
	}
	return false
}

// matches reports whether row holds the values q asks for.
func (r *Repository[T]) matches(ctx context.Context, q lookupQuery, row *T) bool {
	rv := reflect.ValueOf(row).Elem()
	for j, f := range q.def.fields {
		v, _ := f.ValueOf(ctx, rv)
		if isNull(v) {
			return false
		}
		c, err := keys.FromGo(q.def.kinds[j], v)
		if err != nil || c != q.canon[j] {
			return false
		}
	}
	return true
}

// appendPK appends the canonical primary key of row to b.
func (r *Repository[T]) appendPK(ctx context.Context, b []byte, row *T) ([]byte, error) {
	rv := reflect.ValueOf(row).Elem()
	for i, f := range r.model.pk {
		v, _ := f.ValueOf(ctx, rv)
		c, err := keys.FromGo(r.model.kinds[i], v)
		if err != nil {
			return nil, fmt.Errorf("readthrough: %s primary key, column %s: %w", r.model.schema.Name, f.DBName, err)
		}
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	return b, nil
}

// lookupEntry returns the entry of the rows a fill loaded.
func (r *Repository[T]) lookupEntry(ctx context.Context, kind keys.LookupKind, rows []T) ([]byte, error) {
	if kind == keys.Unique {
		if len(rows) == 0 {
			return []byte{entryAbsent}, nil
		}
		return r.appendPK(ctx, []byte{entryKey}, &rows[0])
	}
	b := binary.AppendUvarint([]byte{entryList}, uint64(len(rows)))
	for i := range rows {
		var err error
		if b, err = r.appendPK(ctx, b, &rows[i]); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// parseLookupEntry returns the ids (as Get takes them) an entry of kind names.
func (r *Repository[T]) parseLookupEntry(kind keys.LookupKind, entry []byte) ([]any, error) {
	switch {
	case kind == keys.Unique && len(entry) == 1 && entry[0] == entryAbsent:
		return nil, nil
	case kind == keys.Unique && len(entry) > 1 && entry[0] == entryKey:
		id, rest, err := r.parsePK(entry[1:])
		if err == nil && len(rest) != 0 {
			err = errors.New("trailing bytes")
		}
		return []any{id}, err
	case kind == keys.List && len(entry) > 0 && entry[0] == entryList:
		n, w := binary.Uvarint(entry[1:])
		rest := entry[1+max(w, 0):]
		if w <= 0 || n > uint64(len(rest)) {
			return nil, errors.New("bad member count")
		}
		ids := make([]any, 0, n)
		for range n {
			id, more, err := r.parsePK(rest)
			if err != nil {
				return nil, err
			}
			ids, rest = append(ids, id), more
		}
		if len(rest) != 0 {
			return nil, errors.New("trailing bytes")
		}
		return ids, nil
	}
	return nil, fmt.Errorf("a %s entry starting with %q", kind, entry[:min(len(entry), 1)])
}

// parsePK reads one <pk> and returns it as an id, as Get takes it.
func (r *Repository[T]) parsePK(b []byte) (any, []byte, error) {
	vals := make([]any, len(r.model.pk))
	for i := range vals {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > uint64(len(b)-w) {
			return nil, nil, errors.New("bad primary-key value")
		}
		v, err := goValue(r.model.kinds[i], string(b[w:w+int(n)]))
		if err != nil {
			return nil, nil, err
		}
		vals[i], b = v, b[w+int(n):]
	}
	if len(vals) == 1 {
		return vals[0], b, nil
	}
	return vals, b, nil
}

// goValue turns a canonical value back into a Go value the driver sends as a
// parameter of the column's type, and FromGo turns into the same canonical value.
func goValue(k keys.Kind, c string) (any, error) {
	switch k {
	case keys.Int:
		return strconv.ParseInt(c, 10, 64)
	case keys.Bytes:
		return hex.DecodeString(strings.TrimPrefix(c, `\x`))
	}
	return c, nil
}

// writtenLookupKeys returns the keys of the lookup entries named by the values of a
// written row: the entries it may have entered. Values that are NULL name none.
func (r *Repository[T]) writtenLookupKeys(ctx context.Context, rv reflect.Value) []keys.Key {
	if r.model.lookups == nil {
		return nil
	}
	var out []keys.Key
	for _, def := range r.model.lookups.all {
		k, ok, err := r.rowLookupKey(ctx, def, rv)
		if err != nil {
			r.warn("written row's lookup value has no key; its entries are left to the invalidator",
				slog.String("lookup", def.id.String()), slog.Any("error", err))
			continue
		}
		if ok {
			out = append(out, k)
		}
	}
	return out
}

// rowLookupKey returns the key of def's entry that the values of the row rv name; ok
// is false when one of them is NULL (it names no entry), err set when one has no
// canonical form.
func (r *Repository[T]) rowLookupKey(ctx context.Context, def *lookupDef, rv reflect.Value) (k keys.Key, ok bool, err error) {
	canon := make([]string, len(def.fields))
	for j, f := range def.fields {
		v, _ := f.ValueOf(ctx, rv)
		if isNull(v) {
			return keys.Key{}, false, nil
		}
		if canon[j], err = keys.FromGo(def.kinds[j], v); err != nil {
			return keys.Key{}, false, err
		}
	}
	return r.model.space.LookupKey(def.id, canon...), true, nil
}
