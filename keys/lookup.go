package keys

import (
	"fmt"
	"strings"
)

// LookupKind says what a lookup's entries hold.
type LookupKind byte

const (
	// Unique lookups map the values of a unique column (or of the columns of a
	// composite unique index) to the primary key of the one row that holds them,
	// or to "no such row": a user by email, an API key by its hash.
	Unique LookupKind = 'u'
	// List lookups map the values of a column (typically a foreign key) to the
	// primary keys of every row that holds them: the items of an order.
	List LookupKind = 'l'
)

// String returns "unique" or "list", or LookupKind(c) for an unknown kind.
func (k LookupKind) String() string {
	switch k {
	case Unique:
		return "unique"
	case List:
		return "list"
	}
	return fmt.Sprintf("LookupKind(%q)", byte(k))
}

// Lookup names a cached lookup of a table's rows by columns other than its primary
// key: its kind and its columns. Its columns are kept in the order of their names
// (see Order), whatever order they were given in, since that is the one order both
// sides know: the application declares a composite unique index's fields in any
// order, and the change side sees the columns in the table's. Lookups are small
// immutable values, comparable with ==, and safe for concurrent use. The zero
// Lookup is not usable; use NewLookup.
type Lookup struct {
	kind LookupKind
	// spec is "<kind>=<esc(col1)>,<esc(col2)>...", the columns in name order: the
	// lookup's part of its keys and of its announcement.
	spec string
	n    int // the number of columns
}

// maxLookupColumns bounds the columns of a lookup (Postgres allows 32 in an index).
const maxLookupColumns = 32

// NewLookup returns the lookup of kind over columns, given in any order. The
// columns must be distinct and non-empty, at most 32. The error wraps ErrBadSpace.
func NewLookup(kind LookupKind, columns ...string) (Lookup, error) {
	if kind != Unique && kind != List {
		return Lookup{}, fmt.Errorf("%w: lookup kind %v: use keys.Unique or keys.List", ErrBadSpace, kind)
	}
	if len(columns) == 0 || len(columns) > maxLookupColumns {
		return Lookup{}, fmt.Errorf("%w: a lookup has 1 to %d columns, got %d", ErrBadSpace, maxLookupColumns, len(columns))
	}
	order := Order(columns)
	var b strings.Builder
	b.WriteByte(byte(kind))
	b.WriteByte('=')
	for j, i := range order {
		c := columns[i]
		if c == "" {
			return Lookup{}, fmt.Errorf("%w: lookup column %d is empty", ErrBadSpace, i+1)
		}
		if j > 0 {
			if columns[order[j-1]] == c {
				return Lookup{}, fmt.Errorf("%w: lookup column %s is given twice", ErrBadSpace, quote(c))
			}
			b.WriteByte(',')
		}
		writeEscaped(&b, c)
	}
	return Lookup{kind: kind, spec: b.String(), n: len(columns)}, nil
}

// Kind returns the lookup's kind.
func (l Lookup) Kind() LookupKind { return l.kind }

// Columns returns the lookup's columns in the order its keys take their values:
// the order of their names (Order of the columns given to NewLookup gives that
// order). It returns a new slice.
func (l Lookup) Columns() []string {
	cols, _ := parseSpecColumns(l.spec)
	return cols
}

// Len returns the number of the lookup's columns.
func (l Lookup) Len() int { return l.n }

// String returns the lookup as its keys spell it, such as "u=email" or
// "l=order_id": the kind, '=' and the escaped columns in name order.
func (l Lookup) String() string { return l.spec }

// Key returns the key of the lookup's entry for the values vals: one per column,
// canonical (as returned by FromGo or FromText under the column's Kind), in the
// order of Columns. Its Value holds the entry, its Fence the lease of a fill, as
// for a row; the lookup's entries of one table and version share no slot with each
// other or with the rows, but a Value and its Fence share one. On the zero Space or
// the zero Lookup it returns the zero Key.
//
// The layout is
//
//	<prefix>{<table>|<version>|<kind>=<col1>,<col2>|<v1>,<v2>}:v
//
// A row key's values never hold a bare '|' (it is escaped), so no lookup key is a
// row key, and ParseKey refuses it.
func (s Space) LookupKey(l Lookup, vals ...string) Key {
	if s.head == "" || l.spec == "" {
		return Key{}
	}
	n := len(s.head) + len(l.spec) + len(vals) + 3
	for _, v := range vals {
		n += escapedLen(v)
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(s.head)
	b.WriteString(l.spec)
	b.WriteByte('|')
	for i, v := range vals {
		if i > 0 {
			b.WriteByte(',')
		}
		writeEscaped(&b, v)
	}
	b.WriteString("}:v")
	return Key{value: b.String()}
}

// ParseLookupKey returns the space, the lookup and the values of key, the Value or
// Fence of a key built by LookupKey. The error wraps ErrBadKey.
func ParseLookupKey(key string) (Space, Lookup, []string, error) {
	bad := func(why string) (Space, Lookup, []string, error) {
		return Space{}, Lookup{}, nil, fmt.Errorf("%w: %s: %s", ErrBadKey, quote(key), why)
	}
	open := strings.IndexByte(key, '{')
	if open < 0 || !strings.HasSuffix(key, "}:v") && !strings.HasSuffix(key, "}:f") {
		return bad(`not <prefix>{...}:v or :f`)
	}
	parts := strings.Split(key[open+1:len(key)-3], "|")
	if len(parts) != 4 {
		return bad("not four '|'-separated parts between the braces")
	}
	table, ok := unescape(parts[0])
	if !ok || table == "" {
		return bad("badly escaped table")
	}
	s, err := NewSpace(key[:open], table, parts[1])
	if err != nil {
		return bad(err.Error())
	}
	l, err := parseSpec(parts[2])
	if err != nil {
		return bad(err.Error())
	}
	var vals []string
	for enc := range strings.SplitSeq(parts[3], ",") {
		v, ok := unescape(enc)
		if !ok {
			return bad(fmt.Sprintf("badly escaped value %d", len(vals)+1))
		}
		vals = append(vals, v)
	}
	if len(vals) != l.n {
		return bad(fmt.Sprintf("%d values for %d columns", len(vals), l.n))
	}
	return s, l, vals, nil
}

// parseSpec parses a Lookup's String, accepting only the spelling NewLookup gives.
func parseSpec(spec string) (Lookup, error) {
	if len(spec) < 3 || spec[1] != '=' {
		return Lookup{}, fmt.Errorf("lookup %s is not <kind>=<columns>", quote(spec))
	}
	cols, ok := parseSpecColumns(spec)
	if !ok {
		return Lookup{}, fmt.Errorf("lookup %s: badly escaped columns", quote(spec))
	}
	l, err := NewLookup(LookupKind(spec[0]), cols...)
	if err != nil {
		return Lookup{}, err
	}
	if l.spec != spec {
		return Lookup{}, fmt.Errorf("lookup %s: columns not in name order", quote(spec))
	}
	return l, nil
}

func parseSpecColumns(spec string) ([]string, bool) {
	if len(spec) < 3 {
		return nil, false
	}
	var cols []string
	for enc := range strings.SplitSeq(spec[2:], ",") {
		c, ok := unescape(enc)
		if !ok || c == "" {
			return nil, false
		}
		cols = append(cols, c)
	}
	return cols, true
}

// LookupField returns the field of the prefix's lookup registry (Prefix.Lookups)
// that announces lookup l of the space's table and version:
// "<table>|<version>|<lookup>", the table as given to NewSpace, not escaped, and the
// lookup as its String. On the zero Space or Lookup it returns "".
func (s Space) LookupField(l Lookup) string {
	if s.head == "" || l.spec == "" {
		return ""
	}
	return s.RegistryField() + string(registrySep) + l.spec
}

// ParseLookupField returns the table, the version and the lookup of a field built
// by LookupField, and false for any other string. The field is cut at its last two
// '|': neither a lookup's String nor a version contains one, while a table may.
func ParseLookupField(field string) (table, version string, l Lookup, ok bool) {
	i := strings.LastIndexByte(field, registrySep)
	if i < 0 {
		return "", "", Lookup{}, false
	}
	l, err := parseSpec(field[i+1:])
	if err != nil {
		return "", "", Lookup{}, false
	}
	table, version, ok = ParseRegistryField(field[:i])
	if !ok || table == "" || version == "" {
		return "", "", Lookup{}, false
	}
	return table, version, l, true
}
