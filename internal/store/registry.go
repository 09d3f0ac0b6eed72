package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/keys"
)

// The registry tells the invalidator which schema versions of a table may have cached
// rows. Applications announce a (table, version) with every lease (and write-back
// write), in the same round trip, just before it; the invalidator reads the registry for
// every batch of changes and deletes the keys of each changed row under every announced
// version. Announcing before filling is what makes this safe: a fill whose lease
// predates a commit was announced before the commit, so the invalidator, which reads the
// registry after the commit, knows its version. Announcing every time, not once, keeps
// it safe when Redis restarts without the registry: a lease on the new server comes with
// its entry, and leases from before the restart are gone, so their fills are refused.
//
// It is one hash, keys.Prefix.Registry, with one field per (table, version),
// keys.Space.RegistryField, whose value is the announcing time in Unix milliseconds.

// Model is what a lease or a write-back write announces and indexes: the model's key
// space, whose table and version go to the registry and whose table index lists the
// row (see index.go), and how long the model's values may live. Build it with
// NewModel; a Model built otherwise is refused. It is a small value, safe for
// concurrent use once built.
type Model struct {
	space keys.Space
	// lifetime bounds how long after a lease is taken the row's value may exist.
	lifetime time.Duration
	// index, registry and field are the space's table index, registry key and
	// registry field, built once by NewModel rather than on every lease.
	index, registry, field string
	// Entry, when set, starts every entry the model stores: its keys are shared by
	// every schema version of the model (write-back models, whose pending writes must
	// be seen by every build), so the entry says which version wrote it. See
	// TakeLeases.
	Entry string
	// lookups and lookupField: for a Model from WithLookup, the lookup registry's
	// key and the lookup's field, announced with every lease.
	lookups, lookupField string
	// shape, when set (WithShape), is announced in the shape registry now and then.
	shape *shape
	// boxed holds ReadOrLease's arguments that are the same for every lease of the
	// model, converted to interfaces once: a conversion allocates on every lease.
	boxed struct{ field, offset, lookupField any }
}

// WithLookup returns m for the entries of lookup l: a lease taken with it announces
// l in the prefix's lookup registry (keys.Prefix.Lookups) as well as the table and
// version in the registry, in the same round trip, before the lease. The invalidator
// reads the lookup registry after a commit, so a lookup fill whose lease predates the
// commit is known to it, as a row's version is (see the top of this file). The keys
// leased with it are the lookup's (keys.Space.LookupKey), and go to the table's
// index like rows, so a table flush deletes them.
func (m Model) WithLookup(l keys.Lookup) Model {
	m.lookups = keys.Prefix(m.space.Prefix()).Lookups()
	m.lookupField = m.space.LookupField(l)
	m.boxed.lookupField = m.lookupField
	return m
}

// Space returns the key space given to NewModel.
func (m Model) Space() keys.Space { return m.space }

// announce adds the commands recording m in the registry (and, for a lookup's Model,
// in the lookup registry) to p. The returned command fails if either failed.
func (s *Store) announce(ctx context.Context, p redis.Pipeliner, m Model) announcement {
	now := time.Now().UnixMilli()
	a := announcement{p.HSet(ctx, m.registry, m.field, now), nil}
	if m.lookupField != "" {
		a[1] = p.HSet(ctx, m.lookups, m.lookupField, now)
	}
	m.announceShape(ctx, p)
	return a
}

// announcement holds the commands of announce.
type announcement [2]*redis.IntCmd

// Err returns the first error of the announcement's commands.
func (a announcement) Err() error {
	for _, c := range a {
		if c != nil && c.Err() != nil {
			return c.Err()
		}
	}
	return nil
}

// Versions returns the announced versions of every table under prefix.
func (s *Store) Versions(ctx context.Context, prefix string) (map[string][]string, error) {
	a, err := s.Announced(ctx, prefix)
	return a.Versions, err
}

// Lookups returns the announced lookups of every table under prefix (see
// Model.WithLookup).
func (s *Store) Lookups(ctx context.Context, prefix string) (map[string][]VersionLookup, error) {
	a, err := s.Announced(ctx, prefix)
	return a.Lookups, err
}

// VersionLookup is a lookup announced under a schema version of its table: its entries'
// keys are the version's keys.Space.LookupKey of the lookup.
type VersionLookup struct {
	Version string
	Lookup  keys.Lookup
}

// Announcements is what applications announced under a prefix, by table: the versions
// in the registry, and the lookups in the lookup registry.
type Announcements struct {
	Versions map[string][]string
	Lookups  map[string][]VersionLookup
}

// Announced reads the registry and the lookup registry of prefix in one round trip
// (one pipeline; two keys in different slots on a Cluster, read from their nodes at
// once). Fields neither parses are skipped. The maps are not nil.
func (s *Store) Announced(ctx context.Context, prefix string) (Announcements, error) {
	return s.InvalidateAnnounced(ctx, prefix, nil)
}

// parseAnnounced parses the replies of the registries' HKEYS.
func parseAnnounced(reg, lookups *redis.StringSliceCmd) Announcements {
	out := Announcements{Versions: make(map[string][]string), Lookups: make(map[string][]VersionLookup)}
	for _, f := range reg.Val() {
		if table, version, ok := keys.ParseRegistryField(f); ok {
			out.Versions[table] = append(out.Versions[table], version)
		}
	}
	for _, f := range lookups.Val() {
		if table, version, l, ok := keys.ParseLookupField(f); ok {
			out.Lookups[table] = append(out.Lookups[table], VersionLookup{version, l})
		}
	}
	return out
}

// DeleteMatching deletes every key matching pattern with SCAN and UNLINK, in batches,
// on every master of a Cluster. It does not block Redis as KEYS would, but it walks the
// whole keyspace, and a key created while it runs may survive it, even when it
// replaces one that existed before (a fill turning a lease into a value): do not use
// it to invalidate a table, use FlushTable.
func (s *Store) DeleteMatching(ctx context.Context, pattern string) (int, error) {
	var total atomic.Int64
	scan := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for {
			batch, next, err := c.Scan(ctx, cursor, pattern, 1000).Result()
			if err != nil {
				return err
			}
			// Keys of one batch may hash to different slots; UNLINK them one by one
			// in a pipeline so Cluster accepts them.
			if len(batch) > 0 {
				_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
					for _, k := range batch {
						p.Unlink(ctx, k)
					}
					return nil
				})
				if err != nil {
					return err
				}
				total.Add(int64(len(batch)))
			}
			if next == 0 {
				return nil
			}
			cursor = next
		}
	}
	if err := s.eachMaster(ctx, scan); err != nil {
		return int(total.Load()), fmt.Errorf("store: delete keys matching %s: %w", pattern, err)
	}
	return int(total.Load()), nil
}
