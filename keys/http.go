package keys

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"
)

// The keys and tags of cached HTTP responses (package httpcache).
//
// A response depends on the rows, lookup entries and tables its handler read. Each row
// (and lookup entry) has a third key besides its value and fence, Deps, in the same
// hash slot: it holds the row's dependency epoch, a random token that every
// invalidation of the row deletes together with the value and the fence. A response
// stores the epoch of each of its rows as it found it before reading them, and is
// served only while each row's Deps key still holds it. Each table has a Deps key too,
// in the slot of its index, which a whole-table invalidation deletes.
//
// A tag (a CDN surrogate key) names a row, lookup entry or table for purging: it is
// the same whatever the schema version, so that the invalidator, which deletes a
// row's keys under every version, purges one tag per row.

// tagLen is how many bytes of a SHA-256 digest a tag keeps: 80 bits, so that a
// collision among the rows of a deployment is not a concern (a collision only purges
// more).
const tagLen = 10

// tagEncoding spells tags in [a-z2-7], the characters every CDN accepts in a
// surrogate key.
var tagEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Tag prefixes: "pgc-" for a row or lookup entry, "pgct-" for a table.
const (
	rowTagPrefix   = "pgc-"
	tableTagPrefix = "pgct-"
)

// Deps returns the Redis key of the row's dependency epoch (see the comment above).
// It is in the same Redis Cluster hash slot as Value and Fence, so one DEL deletes
// the three. Pattern and TablePattern do not match it.
func (k Key) Deps() string {
	if k.value == "" {
		return ""
	}
	return k.value[:len(k.value)-1] + string(depsSuffix)
}

// Invalidated returns the keys that invalidating the rows of ks deletes: the Value,
// Fence and Deps of each, in that order. The Fence and Deps keys of all of them share
// one allocation, so that deleting a batch of rows costs no allocation per key.
func Invalidated(ks ...Key) []string {
	size := 0
	for _, k := range ks {
		size += 2 * len(k.value)
	}
	var b strings.Builder
	b.Grow(size)
	for _, k := range ks {
		if k.value != "" {
			stem := k.value[:len(k.value)-1]
			b.WriteString(stem)
			b.WriteByte(fenceSuffix)
			b.WriteString(stem)
			b.WriteByte(depsSuffix)
		}
	}
	all := b.String()
	names := make([]string, 0, 3*len(ks))
	at := 0
	for _, k := range ks {
		n := len(k.value)
		if n == 0 {
			names = append(names, "", "", "")
			continue
		}
		names = append(names, k.value, all[at:at+n], all[at+n:at+2*n])
		at += 2 * n
	}
	return names
}

// Tag returns the row's (or lookup entry's) tag: a surrogate key for a CDN or an HTTP
// cache, "pgc-" and 16 characters of [a-z2-7], a digest of the prefix, the table and
// the primary-key values (or the lookup and its values), not of the schema version,
// so that every version of a row has one tag. It is a pure function of the key, the
// one both the response cache (which sends it) and the invalidator (which purges it)
// use. On the zero Key it returns "".
func (k Key) Tag() string {
	v := k.value
	open := strings.IndexByte(v, '{')
	if open < 0 || !strings.HasSuffix(v, "}:v") {
		return ""
	}
	body := v[open+1 : len(v)-3]
	t := strings.IndexByte(body, '|')
	if t < 0 {
		return ""
	}
	ver := strings.IndexByte(body[t+1:], '|')
	if ver < 0 {
		return ""
	}
	// prefix, escaped table, '|', then what follows the version: the escaped values
	// (or lookup spec and values). Escaped parts hold no '|' or '{', so the parts
	// cannot run into each other.
	return digestTag(rowTagPrefix, v[:open], "{", body[:t+1], body[t+1+ver+1:])
}

// TableDeps returns the Redis key of the table's dependency epoch, which a
// whole-table invalidation (store.FlushTable) deletes. It is in the slot of the
// table's index (TableIndex), and shared by every schema version. On the zero Space
// it returns "".
func (s Space) TableDeps() string {
	idx := s.TableIndex()
	if idx == "" {
		return ""
	}
	return s.prefix + ":deps" + idx[len(s.prefix)+len(":rows"):]
}

// TableTag returns the table's tag: "pgct-" and 16 characters of [a-z2-7], a digest of
// the prefix and the table, shared by every schema version. A response carries the
// tags of the tables it read, which a whole-table invalidation purges. On the zero
// Space it returns "".
func (s Space) TableTag() string {
	if s.head == "" {
		return ""
	}
	start := len(s.prefix) + 1
	end := start + strings.IndexByte(s.head[start:], '|')
	return digestTag(tableTagPrefix, s.prefix, "{", s.head[start:end])
}

func digestTag(prefix string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
	}
	var sum [sha256.Size]byte
	return prefix + tagEncoding.EncodeToString(h.Sum(sum[:0])[:tagLen])
}

// ValidTag reports whether tag is a tag as Tag or TableTag spell them: for checking
// tags received from elsewhere (a purge request).
func ValidTag(tag string) bool {
	rest, ok := strings.CutPrefix(tag, rowTagPrefix)
	if !ok {
		if rest, ok = strings.CutPrefix(tag, tableTagPrefix); !ok {
			return false
		}
	}
	if len(rest) != tagEncoding.EncodedLen(tagLen) {
		return false
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !('a' <= c && c <= 'z' || '2' <= c && c <= '7') {
			return false
		}
	}
	return true
}

// Response returns the Redis keys of a cached HTTP response: its entry and the lease
// of its rendering, in one hash slot. id is a digest of the request's identity
// (method, URL, varying headers), made by package httpcache, of [A-Za-z0-9_.-]; it is
// not checked here.
func (p Prefix) Response(id string) (entry, lease string) {
	base := string(p) + ":http{" + id + "}:"
	return base + "v", base + "f"
}
