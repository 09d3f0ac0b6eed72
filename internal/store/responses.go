package store

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cached HTTP responses (package httpcache) and their dependencies.
//
// A response depends on the rows (and lookup entries, and tables) its handler read.
// Each has a dependency key (keys.Key.Deps, keys.Space.TableDeps) holding an epoch: a
// token that every invalidation of the row deletes together with its value and fence
// (Invalidate, FlushTable), and that the next registration creates anew. A render
// registers each key before the read it guards (RegisterDeps), keeps the epochs it got,
// and the response is served only while every key still holds its epoch (CheckDeps).
//
// Why no response outlives a change of a row it read: call the registration R, the
// read D (after R), and the invalidation I of the row (after the change committed).
//  1. I before R: R creates or finds a later epoch, and D reads after I, so after the
//     commit (the cache holds no row older than I; fills are fenced).
//  2. I after R: I deletes the epoch R returned; the key never holds it again (epochs
//     are unique), so every CheckDeps after I fails, and the response is not served.
//
// A lost or expired dependency key only makes responses that read it render again.

// Dep is a response's dependency: a dependency key and the epoch it held.
type Dep struct {
	Key, Epoch string
}

// registerScript returns the epoch of KEYS[1], creating it as ARGV[1] if there is
// none, and makes it live at least ARGV[2] ms.
var registerScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
`)

// RegisterDeps returns the epochs of the dependency keys names, creating those that
// have none, each to live at least ttl, in one round trip. Call it before reading
// what the keys guard.
func (s *Store) RegisterDeps(ctx context.Context, names []string, ttl time.Duration) ([]Dep, error) {
	if len(names) == 0 {
		return nil, nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	ms := max(ttl, time.Second).Milliseconds()
	cmds := make([]*redis.Cmd, len(names))
	err := s.pipelined(ctx, func(p redis.Pipeliner) {
		for i, n := range names {
			cmds[i] = registerScript.EvalSha(ctx, p, []string{n}, s.token(), ms)
		}
	}, registerScript)
	if err != nil {
		return nil, fmt.Errorf("store: register %d dependencies: %w", len(names), err)
	}
	deps := make([]Dep, len(names))
	for i, c := range cmds {
		e, err := c.Text()
		if err != nil {
			return nil, fmt.Errorf("store: register %s: %w", names[i], err)
		}
		deps[i] = Dep{Key: names[i], Epoch: e}
	}
	return deps, nil
}

// CheckDeps reports whether every dependency key still holds its epoch, in one round
// trip.
func (s *Store) CheckDeps(ctx context.Context, deps []Dep) (bool, error) {
	if len(deps) == 0 {
		return true, nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	names := make([]string, len(deps))
	for i, d := range deps {
		names[i] = d.Key
	}
	vals, err := s.getStrings(ctx, names)
	if err != nil {
		return false, fmt.Errorf("store: check %d dependencies: %w", len(deps), err)
	}
	for i, d := range deps {
		if vals[i] == nil || *vals[i] != d.Epoch {
			return false, nil
		}
	}
	return true, nil
}

// getStrings reads names in one round trip: MGET on one server, a pipeline of GETs on a
// Cluster or Ring client. A nil element is a missing key.
func (s *Store) getStrings(ctx context.Context, names []string) ([]*string, error) {
	out := make([]*string, len(names))
	if !s.Sharded() {
		vals, err := s.rdb.MGet(ctx, names...).Result()
		if err != nil {
			return nil, err
		}
		for i, v := range vals {
			if str, ok := v.(string); ok {
				out[i] = &str
			}
		}
		return out, nil
	}
	cmds := make([]*redis.StringCmd, len(names))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range names {
			cmds[i] = p.Get(ctx, n)
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		return nil, err
	}
	for i, c := range cmds {
		if v, err := c.Result(); err == nil {
			out[i] = &v
		}
	}
	return out, nil
}

// GetResponse returns the cached response entry at key.
func (s *Store) GetResponse(ctx context.Context, key string) ([]byte, bool, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	b, err := s.rdb.Get(ctx, key).Bytes()
	if err == redis.Nil {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: get response %s: %w", key, err)
	}
	return b, true, nil
}

// PutResponse stores a response entry at key for ttl.
func (s *Store) PutResponse(ctx context.Context, key string, entry []byte, ttl time.Duration) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.rdb.Set(ctx, key, entry, ttl).Err(); err != nil {
		return fmt.Errorf("store: put response %s: %w", key, err)
	}
	return nil
}

// DeleteResponse deletes the response entry at key if it still holds entry (one found
// stale), leaving a newer one alone.
func (s *Store) DeleteResponse(ctx context.Context, key string, entry []byte) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := deleteIfScript.Run(ctx, s.rdb, []string{key}, entry).Err(); err != nil {
		return fmt.Errorf("store: delete response %s: %w", key, err)
	}
	return nil
}

// TakeResponseLease takes the lease of rendering a response for d, unless another
// renderer holds it; it returns the lease's token, or "" when it is held.
func (s *Store) TakeResponseLease(ctx context.Context, lease string, d time.Duration) (string, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	tok := s.token()
	ok, err := s.rdb.SetNX(ctx, lease, tok, d).Result()
	if err != nil {
		return "", fmt.Errorf("store: lease %s: %w", lease, err)
	}
	if !ok {
		return "", nil
	}
	return tok, nil
}

// ReleaseResponseLease gives the lease back if it still holds token.
func (s *Store) ReleaseResponseLease(ctx context.Context, lease, token string) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := releaseScript.Run(ctx, s.rdb, []string{lease}, token).Err(); err != nil {
		return fmt.Errorf("store: release %s: %w", lease, err)
	}
	return nil
}
