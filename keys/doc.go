// Package keys names every Redis key pgcache writes. Above all it is the one
// canonical cache-key scheme of the cache: it turns a model's key space and a
// row's primary-key values into the Redis keys of the row's cached value, its
// fence (lease) and its pending write-back record. It also names the keys kept
// per table (the table index) and per prefix (the registry, the write-back
// journal and dead letters, the gap records), and the registry's fields; see
// "Other keys".
//
// Two independent sides must agree byte for byte on the key of a row: the read
// and write side, which holds Go values of GORM primary-key fields, and the
// change side, which sees the same values as Postgres text output in pgoutput
// logical-replication messages. Both sides first canonicalise each value with
// [FromGo] or [FromText] under the column's [Kind], then build the key with
// [Space.Key] ([Space.KeyFromGo] does both for a key of one column). A key is a pure
// function of (prefix, table, schema version, primary-key values); nothing else goes
// into it.
//
// The package imports only the standard library and holds no state.
//
// # Layout
//
// The value key and the fence key of a row are
//
//	<prefix>{<table>|<version>|<pk1>,<pk2>,...}:v
//	<prefix>{<table>|<version>|<pk1>,<pk2>,...}:f
//
// The prefix and version are restricted to characters that need no escaping.
// The table and every primary-key value are escaped: each byte below 0x21 or
// above 0x7e and each of { } | , % : * ? [ ] \ ~ is written as %XX with
// upper-case hex, and the empty string is written as a lone "~". Common values
// such as 42, public.users or a UUID therefore stay readable in redis-cli.
//
// Because no escaped field can contain '{' or '}', the whole row identity
// between the braces is the Redis Cluster hash tag: a row's value key and fence
// key always share a hash slot (see [HashSlot]), while different rows spread
// over all slots. Because no escaped value contains ',' and no escaped value is
// empty or a lone "~", the encoding is injective: different primary-key lists,
// including () vs ("") and ("a", "") vs ("a,"), give different keys, and
// [ParseKey] recovers the space and the values of any key built here.
//
// # Other keys
//
// Besides the keys of rows, these are named here, and nowhere else:
//
//	<prefix>:rows{<table>}   the table's index (Space.TableIndex)
//	<prefix>:models          the registry of cached versions (Prefix.Registry)
//	<prefix>:journal         the write-back journal (Prefix.Journal)
//	<prefix>:deadletter      write-back writes given up on (Prefix.DeadLetter)
//	<prefix>:gaps            tables owing a whole-table flush (Prefix.Gaps)
//	<prefix>:servers:<slot>  the Redis servers a worker last flushed for (Prefix.Servers)
//	<prefix>:lookups         the registry of cached lookups (Prefix.Lookups)
//	<prefix>:shapes          the codec and columns of each cached version (Prefix.Shapes)
//	<prefix>:purges          CDN purges still to do: retries and second purges (Prefix.Purges)
//
// The entries of a lookup by columns other than the primary key (a unique
// column, a has-many list) have keys of their own, in the row keys' layout with
// one more part (see Space.LookupKey):
//
//	<prefix>{<table>|<version>|<kind>=<col1>,<col2>|<v1>,<v2>}:v
//
// The table in an index key is escaped as in a row key, so it is the index's
// hash tag. A field of the registry is "<table>|<version>", the table as given
// to NewSpace, not escaped ([Space.RegistryField]); since a version never
// contains '|' and a quoted table name may, [ParseRegistryField] cuts a field at
// its last '|'. The prefix is followed by ':' in all of these and by '{' in a
// row key, so none of them is a row key, matches a Pattern or TablePattern, or
// is taken by ParseKey for one. These spellings are in deployed Redis data: a
// change to any of them must come with a migration.
//
// # Canonical values
//
// Postgres prints the same value in one way, but Go programs hold values in
// many types, and Postgres accepts many spellings on input. Canonicalisation
// fixes one spelling per value:
//
//   - [Int]: decimal, '-' for negatives, no '+', no leading zeros.
//   - [Text]: the bytes as they are. Case-insensitive types such as citext are
//     not folded; both sides must hold the same spelling.
//   - [UUID]: lower-case 8-4-4-4-12 hyphenated, as Postgres prints it.
//   - [Numeric]: no leading zeros, no trailing fractional zeros, no trailing
//     '.', no exponent, "-0" is "0"; "NaN", "Infinity" and "-Infinity" stay.
//     The scale of a numeric column is not part of the key: 12.50 and 12.5
//     are the same key.
//   - [Bytes]: Postgres hex output, `\x` followed by lower-case hex.
//   - [Char]: character(n) without its trailing spaces, which Postgres pads
//     with and ignores in comparisons.
//
// The values of a key of several columns go in the order of their column names
// ([Order]): the application and the table may declare the columns in different
// orders, and both sides know the names.
//
// Timestamp and floating-point key columns are not supported: their Go and
// Postgres spellings differ in ways this package does not model, so [FromGo]
// rejects time.Time, and floats under [Text], rather than risk a key that
// silently differs from the change side's.
//
// The table name must also be spelled the same on both sides; [QualifiedTable]
// gives one spelling of schema.name for both.
//
// # Hot path
//
// Building a key is on the path of every cache hit. [NewSpace] precomputes the
// constant head of the key, and [Space.Key] builds the key in a single
// allocation, copying values that need no escaping as they are.
package keys

import "errors"

// Errors returned by this package, always wrapped with the detail of what was
// wrong; test for them with errors.Is.
var (
	// ErrBadValue reports a primary-key value that is not a valid value of its
	// Kind, or that is NULL.
	ErrBadValue = errors.New("keys: bad primary-key value")
	// ErrUnsupportedType reports a Go value whose type FromGo cannot
	// canonicalise for the requested Kind.
	ErrUnsupportedType = errors.New("keys: unsupported Go type")
	// ErrBadSpace reports an invalid prefix, table or version given to NewSpace.
	ErrBadSpace = errors.New("keys: bad key space")
	// ErrBadKey reports a string that ParseKey does not recognise as a key
	// built by this package.
	ErrBadKey = errors.New("keys: bad key")
)
