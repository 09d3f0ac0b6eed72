package store

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/keys"
)

// readOrLeaseScript is TakeLease's pipeline in one script, for a single server (where
// a script may touch keys of any slot): it returns V as the lease script does, else
// the pending record's entry, else, once the registry (and the lookup registry) lists
// the model and the table's index lists the row, takes the lease. The registry and
// index writes come before the lease in the same atomic script, so every promise of
// TakeLease holds: whenever the lease is live, the server lists the row's version and
// the index lists the row with a score past the lease and any value it fences (see
// registry.go and index.go). A read that finds the row writes neither, as no lease
// needs them. Expired index entries are pruned only when the row is new to the index
// (ZADD added it): only adds grow the index, and each that finds expired entries
// removes at least as many as it adds, so the index stays bounded as with pruning on
// every add, and a row leased again (the common miss: invalidated, or evicted before
// its entry expired) pays one sorted-set command, not two.
//
// KEYS: V, F, P, the table index, the registry, and the lookup registry for a lookup's
// Model. ARGV: token, lease ms, the model's entry prefix, the announcing time (Unix
// ms), the registry field, the index score's offset (ms), how many expired index
// entries to prune, and the lookup registry field for a lookup's Model.
var readOrLeaseScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and (ARGV[3] == '' or string.sub(v, 1, #ARGV[3]) == ARGV[3]) then return {1, v} end
local p = redis.call('HGET', KEYS[3], 'e')
if p then return {1, p} end
redis.call('HSET', KEYS[5], ARGV[5], ARGV[4])
if KEYS[6] then redis.call('HSET', KEYS[6], ARGV[8], ARGV[4]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZADD', KEYS[4], 'GT', now + tonumber(ARGV[6]), KEYS[1]) > 0 then
  local old = redis.call('ZRANGE', KEYS[4], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[7]))
  if #old > 0 then redis.call('ZREM', KEYS[4], unpack(old)) end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {3, redis.call('PTTL', KEYS[2])}
`)

// ReadOrLease is a read and TakeLease in one round trip: it returns the row's entry
// (Found) if cached or pending, else takes the lease as TakeLease does, with the same
// promises (the registry and the table index list the row before the lease exists).
// So a miss costs two round trips, this and Fill, instead of a GET, the lease and the
// fill. It is for a single server: on a sharded client (where the registry and the
// index are in other slots) it is TakeLease. A hit through it costs more than Get (a
// script, a reply of two elements), so callers use it only where a miss is likely.
func (s *Store) ReadOrLease(ctx context.Context, m Model, k keys.Key, d time.Duration) (_ Lease, err error) {
	if s.Sharded() {
		return s.TakeLease(ctx, m, k, d)
	}
	if m.index == "" {
		return Lease{}, fmt.Errorf("store: lease %s: the Model has no table index; build it with NewModel", k)
	}
	gp, err := s.gate.enter()
	if err != nil {
		return Lease{}, err
	}
	defer func(parent context.Context) { err = s.gate.leave(parent, gp, err) }(ctx)
	ctx, cancel := s.readCtx(ctx, gp)
	defer cancel()
	tok := s.token()
	ks := make([]string, 5, 6)
	ks[0], ks[1], ks[2], ks[3], ks[4] = k.Value(), k.Fence(), k.Pending(), m.index, m.registry
	args := make([]any, 7, 8)
	args[0], args[1], args[2], args[3], args[4], args[5], args[6] = tok, d.Milliseconds(), m.Entry, time.Now().UnixMilli(),
		m.boxed.field, m.boxed.offset, 1+indexPrune
	if m.lookupField != "" {
		ks, args = append(ks, m.lookups), append(args, m.boxed.lookupField)
	}
	var c *redis.Cmd
	if sh := m.shape; sh != nil && time.Now().UnixMilli() >= sh.due.Load() {
		// The shape's announcement, when due, rides in a pipeline with the script.
		err = s.pipelined(ctx, func(p redis.Pipeliner) {
			m.announceShape(ctx, p)
			c = readOrLeaseScript.EvalSha(ctx, p, ks, args...)
		}, readOrLeaseScript)
	} else {
		c = readOrLeaseScript.Run(ctx, s.rdb, ks, args...)
	}
	var res []any
	if err == nil {
		res, err = c.Slice()
	}
	if err != nil {
		return Lease{}, fmt.Errorf("store: read or lease %s: %w", k, err)
	}
	l, err := parseLease(res, tok)
	if err != nil {
		return Lease{}, fmt.Errorf("store: read or lease %s: %w", k, err)
	}
	return l, nil
}
