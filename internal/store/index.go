package store

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/keys"
)

// The table index: whole-table invalidation (a TRUNCATE, a gap in the change stream, a
// change without a usable key) must delete every cached row of a table, under every
// schema version, without walking the keyspace. Each table has a sorted set,
// keys.Space.TableIndex, of the value keys of its rows that were leased or written, each
// scored with the Unix time in milliseconds (the index's server's clock) after which
// neither its value key nor its lease can exist any more. A lease adds its row to the
// index in the lease's own pipeline, so no round trip is added; a write-back write adds
// it in the pipeline that sets its value (on a Cluster, its first step's), before. FlushTable walks the index with ZSCAN and deletes each row's value
// and lease.
//
// # Why a flush misses no fill
//
// A fill (TakeLease or TakeLeases, then a database load, then Fill) and a flush (the
// invalidator, after a TRUNCATE committed, or after a gap in which changes were missed)
// can interleave in these ways. Call the fill's index entry I, its lease L, its load D,
// its store S, and the flush's walk W. The fill loads only once the lease pipeline
// answered, so I and L both happened before D began, in whatever order (on a Cluster
// they run on different servers at once).
//
//  1. D began after the commit: the row it loads is current. Nothing to do.
//  2. D began before the commit. Then I and L came before the commit, so before W
//     began, and the entry is in the index for the whole walk: nothing removes an
//     entry before its score, and the score (I's time + the model's Lifetime, the
//     lease duration plus the longest TTL, + indexMargin) is later than any moment the
//     row's lease or the value S stores can exist. ZSCAN returns every element present
//     for the whole walk, so W visits the entry and deletes the row's value and lease,
//     at a moment V.
//     a. S before V: the old row was stored, and V deletes it.
//     b. S after V: V deleted the lease (L came before W), so S finds the lease gone
//     and stores nothing.
//
// Either way the row is absent or current once the flush returns. A write-back write
// adds the entry before it sets the value, as a lease does, and its pending record, which a
// flush leaves alone, answers reads anyway.
//
// That is also why a flush removes from the index only expired entries, never the ones
// it processed: an entry's lease may still be on its way. On a Cluster I and L run
// concurrently, and on a single server another client's commands can run between them,
// so an entry can be in the index before its lease exists. A flush that deleted the row
// and then removed the entry in that window would leave a live lease with no entry, and
// the next flush (after the fill's load began, before its store) would miss it. Entries
// stay until their score passes, and every add prunes a bounded number of expired ones
// (ReadOrLease's only when its row is new to the index, which is when the index grows),
// so the index holds about the rows of the table cached in the last TTL (and leases),
// and costs a flush that much, whatever else Redis holds.
//
// The index key has no TTL of its own, so eviction under a volatile-* policy never
// takes it; an index that is lost (an allkeys-* policy evicted it, or its Cluster node
// lost writes in a failover) makes the next flush miss the rows cached before, as a
// lost registry would.

// indexMargin is added to every score: it covers the time between the index's and the
// row's server running their commands (a pipeline on a Cluster runs on several
// servers at once) and a difference of clocks after a failover of the index's server.
const indexMargin = time.Minute

// indexPrune is how many more expired entries an add may remove than it adds: an add
// costs O(log n + removed), and an index shrinks back to its live entries.
const indexPrune = 64

// indexScript adds members (ARGV[3..]) to the index KEYS[1], each with the score now +
// ARGV[1] ms unless it has a later one already, and removes up to ARGV[2] expired
// entries. The time is the server's, so every score and every pruning uses one clock.
var indexScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exp = now + tonumber(ARGV[1])
local args = {}
for i = 3, #ARGV do
  args[#args + 1] = exp
  args[#args + 1] = ARGV[i]
end
for i = 1, #args, 1000 do
  redis.call('ZADD', KEYS[1], 'GT', unpack(args, i, math.min(i + 999, #args)))
end
local old = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
if #old > 0 then redis.call('ZREM', KEYS[1], unpack(old)) end
return #old
`)

// pruneIndexScript removes up to ARGV[1] expired entries from the index KEYS[1].
var pruneIndexScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[1]))
if #old > 0 then redis.call('ZREM', KEYS[1], unpack(old)) end
return #old
`)

// NewModel returns the Model of a model cached in space whose values live at most
// lifetime after a lease is taken: the lease (fence) duration plus the longest TTL its
// entries get, jitter and negative entries included. A longer lifetime only keeps index
// entries longer; a shorter one would let a flush miss rows.
func NewModel(space keys.Space, lifetime time.Duration) Model {
	m := Model{space: space, lifetime: lifetime, index: space.TableIndex(),
		registry: keys.Prefix(space.Prefix()).Registry(), field: space.RegistryField()}
	m.boxed.field, m.boxed.offset = m.field, (max(m.lifetime, 0) + indexMargin).Milliseconds()
	return m
}

// indexArgs returns the index script's arguments for rows whose values live at most
// lifetime from now.
func indexArgs(lifetime time.Duration, ks []keys.Key) []any {
	args := make([]any, 0, len(ks)+2)
	args = append(args, (max(lifetime, 0) + indexMargin).Milliseconds(), min(len(ks)+indexPrune, 1000))
	for _, k := range ks {
		args = append(args, k.Value())
	}
	return args
}

// index adds the command recording ks in m's table index to p. It is sent with EVAL,
// not EVALSHA: with two scripts in a pipeline the server might know one and not the
// other, and the retry after NOSCRIPT (see pipelined) would take the leases twice.
func (s *Store) index(ctx context.Context, p redis.Pipeliner, m Model, ks []keys.Key) *redis.Cmd {
	return indexScript.Eval(ctx, p, []string{m.index}, indexArgs(m.lifetime, ks)...)
}

// flushChunk is how many index entries FlushTable reads and deletes per round trip.
const flushChunk = 1000

// FlushTable deletes the value and lease keys of every row of space's table that was
// leased, filled or written under any schema version and may still be cached, by
// walking the table's index: it costs a round trip per flushChunk rows of the table,
// however many other keys Redis holds. A lease taken before FlushTable began is voided
// and a value stored before it returns is deleted (see the comment at the top of this
// file); pending write-back records stay. Each round trip is bounded by the Store's
// timeout. It returns how many rows it visited.
func (s *Store) FlushTable(ctx context.Context, space keys.Space) (int, error) {
	idx := space.TableIndex()
	if idx == "" {
		return 0, fmt.Errorf("store: flush: the zero Space has no table")
	}
	visited := 0
	var cursor uint64
	for {
		rctx, cancel := s.ctx(ctx)
		pairs, next, err := s.rdb.ZScan(rctx, idx, cursor, "", flushChunk).Result()
		cancel()
		if err != nil {
			return visited, fmt.Errorf("store: flush %s: read index %s: %w", space.Table(), idx, err)
		}
		if err := s.deleteRows(ctx, pairs); err != nil {
			return visited, fmt.Errorf("store: flush %s: %w", space.Table(), err)
		}
		visited += len(pairs) / 2
		if next == 0 {
			break
		}
		cursor = next
	}
	// Last, the table's dependency epoch: a response that registered it before this
	// point read rows the walk may not have reached yet (see responses.go).
	rctx, cancel := s.ctx(ctx)
	err := s.rdb.Del(rctx, space.TableDeps()).Err()
	cancel()
	if err != nil {
		return visited, fmt.Errorf("store: flush %s: delete %s: %w", space.Table(), space.TableDeps(), err)
	}
	// The walk's cost covers removing as many expired entries as it visited, by chunks
	// so that no script holds Redis long.
	for pruned := 0; pruned < max(visited, 1); {
		rctx, cancel := s.ctx(ctx)
		n, err := pruneIndexScript.Run(rctx, s.rdb, []string{idx}, flushChunk).Int()
		cancel()
		if err != nil {
			return visited, fmt.Errorf("store: flush %s: prune index %s: %w", space.Table(), idx, err)
		}
		if pruned += n; n < flushChunk {
			break
		}
	}
	return visited, nil
}

// deleteRows deletes the value, lease and dependency keys named by ZSCAN's member,
// score pairs, in one pipeline (one DEL per row: its keys share its slot).
func (s *Store) deleteRows(ctx context.Context, pairs []string) error {
	if len(pairs) == 0 {
		return nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := 0; i < len(pairs); i += 2 {
			k, ok := keys.KeyOfValue(pairs[i])
			if !ok {
				continue // not written by this package; never delete a key it did not name
			}
			p.Del(ctx, k.Value(), k.Fence(), k.Deps())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete %d rows: %w", len(pairs)/2, err)
	}
	return nil
}
