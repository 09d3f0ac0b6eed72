package store

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/keys"
)

// Registries returns every registry in Redis, by prefix: the tables each lists. A worker
// whose own registry is missing uses it to tell a fresh or lost registry (nothing to
// find) from a worker started with a prefix no application uses (another prefix caches
// its tables). It walks the keyspace with SCAN on every master, so it is for rare use.
func (s *Store) Registries(ctx context.Context) (map[string][]string, error) {
	var mu sync.Mutex
	out := make(map[string][]string)
	scan := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for {
			batch, next, err := c.ScanType(ctx, cursor, keys.RegistryPattern(), 1000, "hash").Result()
			if err != nil {
				return err
			}
			for _, k := range batch {
				prefix, ok := keys.ParseRegistry(k)
				if !ok {
					continue
				}
				fields, err := c.HKeys(ctx, k).Result()
				if err != nil {
					return err
				}
				var tables []string
				for _, f := range fields {
					if table, _, ok := keys.ParseRegistryField(f); ok && table != "" {
						tables = append(tables, table)
					}
				}
				mu.Lock()
				out[string(prefix)] = tables
				mu.Unlock()
			}
			if next == 0 {
				return nil
			}
			cursor = next
		}
	}
	if err := s.eachMaster(ctx, scan); err != nil {
		return nil, fmt.Errorf("store: list registries: %w", err)
	}
	return out, nil
}

// eachMaster runs f on every master of a Cluster, concurrently, or on the one server.
func (s *Store) eachMaster(ctx context.Context, f func(context.Context, redis.Cmdable) error) error {
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return f(ctx, c) })
	}
	return f(ctx, s.rdb)
}
