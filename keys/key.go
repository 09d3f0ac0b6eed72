package keys

import (
	"fmt"
	"strconv"
	"strings"
)

// Limits on the parts of a Space.
const (
	maxPrefixLen  = 64
	maxVersionLen = 64
)

// Bytes written as %XX inside a key, as bit sets over 0-63 and 64-127; every
// byte from 128 up is escaped too. Besides control bytes, space and DEL, these
// are the key's own separators ({ } | , : and the empty marker ~), the escape
// byte %, and Redis glob metacharacters (* ? [ ] \), so that Pattern needs no
// escaping and the whole row identity is one hash tag.
const (
	escLo uint64 = 1<<0x21 - 1 | 1<<'%' | 1<<',' | 1<<':' | 1<<'*' | 1<<'?'
	escHi uint64 = 1<<('['-64) | 1<<('\\'-64) | 1<<(']'-64) | 1<<('{'-64) | 1<<('|'-64) |
		1<<('}'-64) | 1<<('~'-64) | 1<<(0x7f-64)
)

// emptyMarker is the escaped form of the empty string. Since '~' is itself
// escaped, no non-empty value escapes to it.
const emptyMarker = "~"

func needsEscape(c byte) bool {
	m := escLo
	if c >= 64 {
		m = escHi
	}
	return c >= 128 || m>>(c&63)&1 != 0
}

// escapedLen is the length of esc(s).
func escapedLen(s string) int {
	if s == "" {
		return 1
	}
	n := len(s)
	for i := 0; i < len(s); i++ {
		if needsEscape(s[i]) {
			n += 2
		}
	}
	return n
}

const upperHex = "0123456789ABCDEF"

// writeEscaped writes esc(s) to b, copying runs of bytes that need no escaping
// as they are.
func writeEscaped(b *strings.Builder, s string) {
	if s == "" {
		b.WriteString(emptyMarker)
		return
	}
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !needsEscape(c) {
			continue
		}
		b.WriteString(s[start:i])
		b.WriteByte('%')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&0xf])
		start = i + 1
	}
	b.WriteString(s[start:])
}

// unescape reverses a non-empty escaped field, accepting only the one
// spelling escape produces.
func unescape(enc string) (string, bool) {
	if enc == "" {
		return "", false
	}
	if enc == emptyMarker {
		return "", true
	}
	if !strings.Contains(enc, "%") {
		for i := 0; i < len(enc); i++ {
			if needsEscape(enc[i]) {
				return "", false
			}
		}
		return enc, true
	}
	var b strings.Builder
	b.Grow(len(enc))
	for i := 0; i < len(enc); {
		c := enc[i]
		if c != '%' {
			if needsEscape(c) {
				return "", false
			}
			b.WriteByte(c)
			i++
			continue
		}
		if i+2 >= len(enc) {
			return "", false
		}
		hi, lo := strings.IndexByte(upperHex, enc[i+1]), strings.IndexByte(upperHex, enc[i+2])
		if hi < 0 || lo < 0 {
			return "", false
		}
		if c = byte(hi<<4 | lo); !needsEscape(c) {
			return "", false
		}
		b.WriteByte(c)
		i += 3
	}
	return b.String(), true
}

// Space is the key space of one model: a prefix shared by the application,
// the model's table and its schema version. Spaces are small immutable values,
// comparable with ==, and safe for concurrent use. The zero Space is not
// usable: its keys and pattern are empty. Use NewSpace.
type Space struct {
	prefix, table, version string
	// head is the constant start of every key: prefix{esc(table)|version|
	head string
}

// NewSpace returns the key space of a model. prefix names the application or
// environment, such as "app:" or "pgcache"; table is the model's table,
// preferably schema-qualified as QualifiedTable prints it; version is the
// model's schema version, which changes whenever the cached encoding changes,
// so that old bytes are never decoded into a new struct.
//
// prefix must be 1-64 bytes of [A-Za-z0-9_.:-]; version 1-64 bytes of
// [A-Za-z0-9_.-]; table any non-empty string. The error wraps ErrBadSpace.
func NewSpace(prefix, table, version string) (Space, error) {
	if err := checkName("prefix", prefix, maxPrefixLen, true); err != nil {
		return Space{}, err
	}
	if table == "" {
		return Space{}, fmt.Errorf("%w: table is empty; give the model's table name, such as public.users", ErrBadSpace)
	}
	if err := checkName("version", version, maxVersionLen, false); err != nil {
		return Space{}, err
	}
	var b strings.Builder
	b.Grow(len(prefix) + escapedLen(table) + len(version) + 3)
	b.WriteString(prefix)
	b.WriteByte('{')
	writeEscaped(&b, table)
	b.WriteByte('|')
	b.WriteString(version)
	b.WriteByte('|')
	return Space{prefix: prefix, table: table, version: version, head: b.String()}, nil
}

func checkName(what, s string, maxLen int, colon bool) error {
	allowed := "A-Za-z0-9_.-"
	if colon {
		allowed = "A-Za-z0-9_.:-"
	}
	if s == "" {
		return fmt.Errorf("%w: %s is empty; use 1-%d bytes of [%s]", ErrBadSpace, what, maxLen, allowed)
	}
	if len(s) > maxLen {
		return fmt.Errorf("%w: %s %s is %d bytes long; use at most %d", ErrBadSpace, what, quote(s), len(s), maxLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '_' || c == '.' || c == '-' || colon && c == ':' {
			continue
		}
		return fmt.Errorf("%w: %s %s has %q at byte %d; use only [%s]", ErrBadSpace, what, quote(s), c, i, allowed)
	}
	return nil
}

// Prefix returns the prefix given to NewSpace.
func (s Space) Prefix() string { return s.prefix }

// Table returns the table given to NewSpace.
func (s Space) Table() string { return s.table }

// Version returns the schema version given to NewSpace.
func (s Space) Version() string { return s.version }

// Key returns the key of the row whose primary-key values are pk, in the
// order the columns are declared. Each value must be canonical, as returned by
// FromGo or FromText, for the read side and the change side to agree. Key
// makes one allocation. On the zero Space it returns the zero Key.
func (s Space) Key(pk ...string) Key {
	if s.head == "" {
		return Key{}
	}
	n := len(s.head) + len(pk) + 2 // commas, '}' and the ":v" suffix
	if len(pk) == 0 {
		n++
	}
	plain := true // whether every value is written as it is
	for _, v := range pk {
		e := escapedLen(v)
		plain = plain && e == len(v)
		n += e
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(s.head)
	for i, v := range pk {
		if i > 0 {
			b.WriteByte(',')
		}
		if plain {
			b.WriteString(v)
		} else {
			writeEscaped(&b, v)
		}
	}
	b.WriteString("}:v")
	return Key{value: b.String()}
}

// KeyFromGo returns Key(FromGo(k, v)) for a primary key of one column, of kind k, with
// FromGo's errors. A read builds its key from the caller's id each time: a Go
// integer's digits go straight into the key, which is then the only allocation, where
// FromGo would first allocate them as a string (for 100 or more).
func (s Space) KeyFromGo(k Kind, v any) (Key, error) {
	var digits [20]byte // an int64's with its sign, or a uint64's
	if intKind(k) {
		switch x := v.(type) {
		case int64:
			return s.Key(string(strconv.AppendInt(digits[:0], x, 10))), nil
		case int:
			return s.Key(string(strconv.AppendInt(digits[:0], int64(x), 10))), nil
		case int32:
			return s.Key(string(strconv.AppendInt(digits[:0], int64(x), 10))), nil
		case uint64:
			return s.Key(string(strconv.AppendUint(digits[:0], x, 10))), nil
		case uint:
			return s.Key(string(strconv.AppendUint(digits[:0], uint64(x), 10))), nil
		case uint32:
			return s.Key(string(strconv.AppendUint(digits[:0], uint64(x), 10))), nil
		}
	}
	c, err := FromGo(k, v)
	if err != nil {
		return Key{}, err
	}
	return s.Key(c), nil
}

// Pattern returns a Redis SCAN MATCH pattern that matches the value and fence
// keys of every row of the space, and no key of any other space. The parts of
// a space never contain glob metacharacters, so none need escaping. On the
// zero Space it returns "".
func (s Space) Pattern() string {
	if s.head == "" {
		return ""
	}
	return s.head + "*}:[vf]"
}

// TablePattern returns a Redis SCAN MATCH pattern that matches the value and
// fence keys of every row of the space's table under every schema version, for
// invalidating a whole table (a TRUNCATE, or a gap in the change stream) without
// knowing which versions were cached. On the zero Space it returns "".
func (s Space) TablePattern() string {
	if s.head == "" {
		return ""
	}
	// head is prefix{esc(table)|version|; keep it up to the first '|', which the
	// escaped table never contains.
	cut := len(s.prefix) + 1 + strings.IndexByte(s.head[len(s.prefix)+1:], '|') + 1
	return s.head[:cut] + "*}:[vf]"
}

// TableIndex returns the Redis key of the table's index: a sorted set of the
// value keys of the table's rows that were leased, filled or written under any
// schema version, which a whole-table invalidation walks instead of the
// keyspace. Its hash tag is the escaped table, so it is in a slot of its own,
// not in a row's, and never matches Pattern or TablePattern. All versions of a
// table share it. On the zero Space it returns "".
func (s Space) TableIndex() string {
	if s.head == "" {
		return ""
	}
	// head is prefix{esc(table)|version|; esc(table) never contains '|' or braces.
	start := len(s.prefix) + 1
	end := start + strings.IndexByte(s.head[start:], '|')
	return s.prefix + ":rows{" + s.head[start:end] + "}"
}

// Key is the key of one row. It is a small immutable value, comparable with
// ==, and safe for concurrent use. The zero Key has empty Value and Fence.
type Key struct {
	value string // ends in "}:v"
}

// Value returns the Redis key of the row's cached value.
func (k Key) Value() string { return k.value }

// The last byte of a row's fence key and of its dependency epoch's key (Fence, Deps),
// which are its value key's with that byte replaced; Invalidated builds them too.
const (
	fenceSuffix = 'f'
	depsSuffix  = 'd'
)

// Fence returns the Redis key of the row's fence or lease. It is in the same
// Redis Cluster hash slot as Value, so both can be used in one transaction or
// script.
func (k Key) Fence() string {
	if k.value == "" {
		return ""
	}
	return k.value[:len(k.value)-1] + string(fenceSuffix)
}

// Pending returns the Redis key of the row's pending write-back record: the
// latest write acknowledged to the application and not yet applied to
// Postgres. It is in the same Redis Cluster hash slot as Value and Fence, so a
// script can read it together with them. Pattern and TablePattern do not match
// it: invalidating a row or a table never deletes a pending write.
func (k Key) Pending() string {
	if k.value == "" {
		return ""
	}
	return k.value[:len(k.value)-1] + "p"
}

// Landed returns the Redis key of the row's landing mark: the version (journal
// entry id) of the latest write-back write of the row that landed, or that a
// flusher gave up waiting for, so that no older write lands after it. It is in the
// same hash slot as Value.
func (k Key) Landed() string {
	if k.value == "" {
		return ""
	}
	return k.value[:len(k.value)-1] + "l"
}

// String returns Value.
func (k Key) String() string { return k.value }

// ParseKey returns the space and the primary-key values of key, which is the
// Value or the Fence of a Key. It accepts exactly the keys this package
// builds, so that s.Key(pk...) has the Value or Fence key. The error wraps
// ErrBadKey.
func ParseKey(key string) (Space, []string, error) {
	bad := func(why string) (Space, []string, error) {
		return Space{}, nil, fmt.Errorf("%w: %s: %s", ErrBadKey, quote(key), why)
	}
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return bad("no '{'")
	}
	if !strings.HasSuffix(key, "}:v") && !strings.HasSuffix(key, "}:f") {
		return bad(`does not end in "}:v" or "}:f"`)
	}
	body := key[open+1 : len(key)-3]
	if strings.ContainsAny(body, "{}") {
		return bad("braces inside the hash tag")
	}
	tableEnc, rest, ok := strings.Cut(body, "|")
	if !ok {
		return bad("missing '|' after the table")
	}
	version, pkEnc, ok := strings.Cut(rest, "|")
	if !ok {
		return bad("missing '|' after the version")
	}
	table, ok := unescape(tableEnc)
	if !ok || table == "" {
		return bad("badly escaped table")
	}
	s, err := NewSpace(key[:open], table, version)
	if err != nil {
		return bad(err.Error())
	}
	if pkEnc == "" {
		return s, nil, nil
	}
	pk := make([]string, 0, strings.Count(pkEnc, ",")+1)
	for enc := range strings.SplitSeq(pkEnc, ",") {
		v, ok := unescape(enc)
		if !ok {
			return bad(fmt.Sprintf("badly escaped primary-key value %d", len(pk)+1))
		}
		pk = append(pk, v)
	}
	return s, pk, nil
}

// QualifiedTable returns the table name schema.name in the one spelling both
// sides should give NewSpace: each part is double-quoted, with inner quotes
// doubled, unless it is a plain lower-case identifier ([a-z_][a-z0-9_$]*).
// With an empty schema it returns the name alone. The change side has the
// schema and name from the relation message, the read side from the model.
//
// Unlike Postgres' quote_ident, QualifiedTable does not quote keywords; it
// is a canonical form, not SQL to execute.
func QualifiedTable(schema, name string) string {
	if schema == "" {
		return quoteIdent(name)
	}
	return quoteIdent(schema) + "." + quoteIdent(name)
}

func quoteIdent(s string) string {
	plain := s != ""
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = 'a' <= c && c <= 'z' || c == '_' || i > 0 && ('0' <= c && c <= '9' || c == '$')
	}
	if plain {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
