package keys

import (
	"strconv"
	"strings"
)

// Suffixes of the keys of a prefix. Row keys continue the prefix with '{', so no
// row key ends like these (see the package doc, "Other keys").
const (
	registrySuffix   = ":models"
	journalSuffix    = ":journal"
	deadLetterSuffix = ":deadletter"
	gapsSuffix       = ":gaps"
	serversSuffix    = ":servers:"
	lookupsSuffix    = ":lookups"
	shapesSuffix     = ":shapes"
	purgesSuffix     = ":purges"
)

// registrySep separates the table and the version in a registry field.
const registrySep = '|'

// Prefix is the key prefix of an application, as given to NewSpace, and names the
// keys pgcache keeps once per prefix rather than per table or row. A Prefix is a
// plain string and is not checked here: NewSpace checks it. Its methods are safe for
// concurrent use.
type Prefix string

// Registry returns the key of the prefix's registry: a hash with one field per
// (table, schema version) that may be cached under the prefix (see
// Space.RegistryField), which the invalidator reads to know the versions of a
// changed row's keys.
func (p Prefix) Registry() string { return string(p) + registrySuffix }

// Journal returns the key of the prefix's write-back journal: a stream of the
// writes acknowledged to applications and not yet applied to Postgres.
//
// Since write-back runs on Redis Cluster the journal is sharded (see JournalShard);
// this single stream is what earlier versions wrote, which flushers still drain.
func (p Prefix) Journal() string { return string(p) + journalSuffix }

// JournalShards is how many streams the write-back journal is sharded into.
const JournalShards = 16

// JournalShard returns the key of shard i (0 <= i < JournalShards) of the prefix's
// write-back journal, "<prefix>:journal{i}": a stream whose hash tag is its number,
// so each shard lives in one Redis Cluster hash slot. A row's writes all go to the
// shard JournalShardOf names.
func (p Prefix) JournalShard(i int) string {
	return string(p) + journalSuffix + "{" + strconv.Itoa(i) + "}"
}

// JournalShardOf returns the journal shard of the row k: its hash slot modulo
// JournalShards.
func JournalShardOf(k Key) int { return int(HashSlot(k.Value()) % JournalShards) }

// DeadLetter returns the key of the prefix's dead-letter stream: the write-back
// writes given up on, with the reason.
func (p Prefix) DeadLetter() string { return string(p) + deadLetterSuffix }

// Gaps returns the key of the prefix's gap records: a hash of the tables that owe
// a whole-table invalidation because their changes were, or are about to be,
// missed.
func (p Prefix) Gaps() string { return string(p) + gapsSuffix }

// Servers returns the key where the worker streaming slot records the Redis servers
// it last flushed its tables for: the run ids of the masters, which change when a
// server restarts or a replica is promoted, and with them, perhaps, deletions Redis
// had acknowledged. slot is a replication slot name ([a-z0-9_]).
func (p Prefix) Servers(slot string) string { return string(p) + serversSuffix + slot }

// Lookups returns the key of the prefix's lookup registry: a hash with one field per
// (table, schema version, lookup) whose entries may be cached under the prefix (see
// Space.LookupField), which the invalidator reads to know which lookup entries a
// changed row's values name.
func (p Prefix) Lookups() string { return string(p) + lookupsSuffix }

// Shapes returns the key of the prefix's shape registry: a hash with one field per
// (table, schema version), as Space.RegistryField spells it, whose value describes
// the version's cached entries (their codec and columns), so that a process without
// the model's Go type (the worker's coherence auditor) can read them.
func (p Prefix) Shapes() string { return string(p) + shapesSuffix }

// Purges returns the key of the prefix's purge stream: the CDN purges (tags) the
// invalidator has still to do, purges that failed and second purges, each entry due
// at a time (see package invalidator, purge.go).
func (p Prefix) Purges() string { return string(p) + purgesSuffix }

// RegistryPattern returns a Redis SCAN MATCH pattern that matches the registry of
// every prefix; ParseRegistry recovers the prefix of each key it matches.
func RegistryPattern() string { return "*" + registrySuffix }

// ParseRegistry returns the prefix whose registry is key, and false when key is not
// named like a registry.
func ParseRegistry(key string) (Prefix, bool) {
	p, ok := strings.CutSuffix(key, registrySuffix)
	return Prefix(p), ok
}

// RegistryField returns the field of the prefix's registry that lists the space's
// table and version: "<table>|<version>", the table as given to NewSpace, not
// escaped. On the zero Space it returns "".
func (s Space) RegistryField() string {
	if s.head == "" {
		return ""
	}
	return s.table + string(registrySep) + s.version
}

// ParseRegistryField returns the table and the version of a registry field, as
// Space.RegistryField builds it, and false when field has no '|'. The field is cut at
// its last '|': a version never contains one, while a table (a quoted name) may. It
// does not check the parts, so either may be empty in a field not built by
// RegistryField.
func ParseRegistryField(field string) (table, version string, ok bool) {
	i := strings.LastIndexByte(field, registrySep)
	if i < 0 {
		return "", "", false
	}
	return field[:i], field[i+1:], true
}

// KeyOfValue returns the Key whose Value is value, and false unless value ends as a
// value key does ("}:v"). Unlike ParseKey it checks nothing else and does not
// allocate: it is for value keys read back from Redis (a table index), to name
// their other keys.
func KeyOfValue(value string) (Key, bool) {
	if !strings.HasSuffix(value, "}:v") {
		return Key{}, false
	}
	return Key{value: value}, true
}
