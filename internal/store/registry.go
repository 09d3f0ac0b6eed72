package store

import (
	"context"
	"fmt"

	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
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
// It is one hash, <prefix>:models, field "<table>|<version>", value the announcing time
// in Unix milliseconds. Row keys start with "<prefix>{", so the two never collide.

// RegistryKey returns the registry's key for a key prefix.
func RegistryKey(prefix string) string { return prefix + ":models" }

// Model names what the registry lists: a table cached under a schema version and a key
// prefix; and what a lease adds to the table's index (see index.go). Build it with
// NewModel.
type Model struct {
	Prefix, Table, Version string
	// Index is the table's index key (keys.Space.TableIndex).
	Index string
	// Lifetime bounds how long after a lease is taken the row's value may exist.
	Lifetime time.Duration
	// Entry, when set, starts every entry the model stores: its keys are shared by
	// every schema version of the model (write-back models, whose pending writes must
	// be seen by every build), so the entry says which version wrote it. See
	// TakeLeases.
	Entry string
}

// announce adds the command recording m in the registry to p.
func (s *Store) announce(ctx context.Context, p redis.Pipeliner, m Model) *redis.IntCmd {
	return p.HSet(ctx, RegistryKey(m.Prefix), m.Table+"|"+m.Version, time.Now().UnixMilli())
}

// Announce records that version of table may be cached under prefix. TakeLease,
// TakeLeases and Journal do it themselves, in the same round trip, every time: a
// registry lost with a Redis restart is back before any new lease or value exists.
func (s *Store) Announce(ctx context.Context, prefix, table, version string) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	err := s.rdb.HSet(ctx, RegistryKey(prefix), table+"|"+version, time.Now().UnixMilli()).Err()
	if err != nil {
		return fmt.Errorf("store: announce %s version %s: %w", table, version, err)
	}
	return nil
}

// Versions returns the announced versions of every table under prefix.
func (s *Store) Versions(ctx context.Context, prefix string) (map[string][]string, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	fields, err := s.rdb.HKeys(ctx, RegistryKey(prefix)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: read registry %s: %w", RegistryKey(prefix), err)
	}
	out := make(map[string][]string)
	for _, f := range fields {
		// Versions never contain '|'; a quoted table name may.
		i := strings.LastIndexByte(f, '|')
		if i < 0 {
			continue
		}
		out[f[:i]] = append(out[f[:i]], f[i+1:])
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
