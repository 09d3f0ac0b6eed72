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
}

// Space returns the key space given to NewModel.
func (m Model) Space() keys.Space { return m.space }

// announce adds the command recording m in the registry to p.
func (s *Store) announce(ctx context.Context, p redis.Pipeliner, m Model) *redis.IntCmd {
	return p.HSet(ctx, m.registry, m.field, time.Now().UnixMilli())
}

// Versions returns the announced versions of every table under prefix.
func (s *Store) Versions(ctx context.Context, prefix string) (map[string][]string, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	reg := keys.Prefix(prefix).Registry()
	fields, err := s.rdb.HKeys(ctx, reg).Result()
	if err != nil {
		return nil, fmt.Errorf("store: read registry %s: %w", reg, err)
	}
	out := make(map[string][]string)
	for _, f := range fields {
		table, version, ok := keys.ParseRegistryField(f)
		if !ok {
			continue
		}
		out[table] = append(out[table], version)
	}
	return out, nil
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
