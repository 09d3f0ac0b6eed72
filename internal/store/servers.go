package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Redis acknowledges a write before its replicas have it, and before its AOF is on disk
// unless appendfsync is always. A replica promoted by a failover, or a server restarted
// from its AOF, may therefore lack deletions that the invalidator had acknowledged to
// Postgres, and serve rows they deleted until their TTL. Such an event changes the
// server's run id (a promoted replica has its own; a restart draws a new one), so the
// invalidator compares the masters' run ids with those it last flushed its tables for,
// and flushes them when they differ (see package invalidator).

// ServerIDs returns the run id of every master (one, unless the client is a Cluster
// client), sorted and joined by commas.
func (s *Store) ServerIDs(ctx context.Context) (string, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var (
		mu  sync.Mutex
		ids []string
	)
	err := s.eachMaster(ctx, func(ctx context.Context, c redis.Cmdable) error {
		info, err := c.Info(ctx, "server").Result()
		if err != nil {
			return err
		}
		id, ok := infoField(info, "run_id")
		if !ok {
			return errors.New("INFO server has no run_id")
		}
		mu.Lock()
		ids = append(ids, id)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("store: read the servers' run ids: %w", err)
	}
	slices.Sort(ids)
	return strings.Join(ids, ","), nil
}

func infoField(info, name string) (string, bool) {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// SeenServers returns what SetSeenServers last stored at key, "" if nothing.
func (s *Store) SeenServers(ctx context.Context, key string) (string, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	v, err := s.rdb.Get(ctx, key).Result()
	if err == redis.Nil {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store: read %s: %w", key, err)
	}
	return v, nil
}

// SetSeenServers stores ids at key.
func (s *Store) SetSeenServers(ctx context.Context, key, ids string) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.rdb.Set(ctx, key, ids, 0).Err(); err != nil {
		return fmt.Errorf("store: write %s: %w", key, err)
	}
	return nil
}
