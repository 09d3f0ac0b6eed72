package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
)

// Write-back keeps, for each prefix, a journal sharded into keys.JournalShards
// streams read by a consumer group of flushers and, for each row with a write not yet
// in Postgres, a pending record P (a hash in the row's hash slot), named by
// keys.Prefix.JournalShard, keys.Prefix.DeadLetter, keys.Key.Pending and
// keys.Key.Landed:
//
//	<prefix>:journal{i}  stream; each entry: k = the row's value key, d = the change
//	<prefix>:deadletter  stream; writes that could not be applied, with the reason
//	<prefix>{row}:p      hash;   v = the journal entry id of the row's latest write,
//	                             e = that write's cache entry
//	<prefix>{row}:l      string; the landing mark: the id of the latest write of the
//	                             row that landed or was fenced (expires after LandedTTL)
//
// A row's writes all go to one shard (keys.JournalShardOf), so the journal entry id is
// the write's version: stream ids only grow, even after P is deleted, so a replayed
// old entry never matches a newer write's P. (A per-row counter kept in P would restart
// at 1 once P is cleared, and an old entry replayed after a crash could then pass for
// the new write.)
//
// # A write in two steps
//
// On Redis Cluster the shard and the row are in different hash slots, so a write is
// two steps: (1) XADD the entry to the shard; (2) land it: a script in the row's slot
// sets P to the entry's id and cache entry, sets (or deletes) the row's value key V,
// deletes its fence F and dependency epoch D (keys.Key.Deps, so cached HTTP responses
// showing the row are not served), and sets the landing mark L to the id. Between the
// two a flusher may read the entry; it must not apply it (the write is not
// acknowledged and may never be), nor drop it (it may land a moment later). So a
// flusher applies an entry only when P holds its id; drops it when P holds a later id
// or L is at or past it (superseded, applied, or given up on); and otherwise holds it
// until the entry is LandingTimeout old, then fences it: sets L to its id (FenceEntries),
// after which the landing refuses it with ErrLate. The landing also refuses an entry
// that L is past (a later write of the row landed first: the write is superseded and
// the landing reports success, as the write is ordered before the one that replaced
// it), and one older than landWithin by its server's clock, so that a landing delayed
// past the expiry of a fence's mark is refused too. The only clock assumption: the
// clocks of the Redis masters differ by less than LandedTTL - landWithin (9 minutes).
//
// On a single Redis (or Sentinel) the two steps are one script, so a write is wholly
// there or not at all; the flusher's rules are the same.

// Journal entry fields.
const (
	fieldKey    = "k"
	fieldChange = "d"
	fieldBase   = "b" // a soft delete's: the change of the pending write it supersedes
)

// LandedTTL is how long a landing mark lives after it was last set, and landWithin how
// old (by its stream id) an entry may be when it lands.
const (
	LandedTTL  = 10 * time.Minute
	landWithin = time.Minute
)

// Errors of write-back writes and journal reads.
var (
	// ErrUnsupported reports a command the Redis server does not know (WAITAOF before 7.2).
	ErrUnsupported = errors.New("store: command not supported by this Redis")
	// ErrNoGroup reports a read of the journal by a consumer group it does not have:
	// the journal, and the group with it, was deleted. Create the group again.
	ErrNoGroup = errors.New("store: no such consumer group")
	// ErrLate reports a write whose journal entry was appended but that landed too late
	// (LandingTimeout after the entry, or landWithin by Redis' clock): a flusher gave up
	// on it, so the write was not made. Nothing of it is visible; it may be retried.
	ErrLate = errors.New("store: write landed too late and was refused (nothing was written)")
	// ErrRaced reports a soft delete that lost a race with another write of the row,
	// three times in a row: nothing was written; it may be retried.
	ErrRaced = errors.New("store: soft delete raced with other writes of the row (nothing was written)")
)

// idLua defines parse(id), the milliseconds and sequence of a stream id, and
// later(a, b), whether id a is after id b: the Lua of CompareIDs, shared by the
// scripts that order journal ids.
const idLua = `
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function later(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am > bm or (am == bm and as > bs)
end
`

// landLua defines land(id, base): it lands the write with journal entry id of the row
// whose V, F, P, D and L are KEYS[1..5] (see the top of this file). ARGV: entry, value
// TTL in ms (0: delete V instead), L's TTL in ms, how old the entry may be in ms (0: any
// age). base, if not nil, is the id P must hold (” for none) or the write raced. It
// returns 1 landed, 2 superseded (a later write landed first: nothing done), 3 late
// (fenced or too old), 4 raced.
const landLua = idLua + `
local function land(id, base)
  local l = redis.call('GET', KEYS[5])
  if l then
    if l == id then return 3 end
    if later(l, id) then return 2 end
  end
  local within = tonumber(ARGV[4])
  if within > 0 then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    if now - parse(id) > within then
      redis.call('SET', KEYS[5], id, 'PX', ARGV[3])
      return 3
    end
  end
  redis.call('SET', KEYS[5], id, 'PX', ARGV[3])
  if base and (redis.call('HGET', KEYS[3], 'v') or '') ~= base then return 4 end
  redis.call('HSET', KEYS[3], 'v', id, 'e', ARGV[1])
  local ttl = tonumber(ARGV[2])
  if ttl > 0 then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  else
    redis.call('DEL', KEYS[1])
  end
  redis.call('DEL', KEYS[2], KEYS[4])
  return 1
end
`

// journalScript records one write on a single Redis: both steps in one script. KEYS:
// V, F, P, D, L, the shard. ARGV: land's, then the change. It returns the entry id.
var journalScript = redis.NewScript(landLua + `
local id = redis.call('XADD', KEYS[6], '*', 'k', KEYS[1], 'd', ARGV[5])
local r = land(id, nil)
if r ~= 1 then return redis.error_reply('write ' .. id .. ' of ' .. KEYS[1] .. ' did not land: ' .. r) end
return id
`)

// landScript is a write's second step. KEYS: V, F, P, D, L. ARGV: land's, then the
// entry id and, for a soft delete, the id P must hold. It returns land's outcome.
var landScript = redis.NewScript(landLua + `
return land(ARGV[5], ARGV[6])
`)

// appendScript is a soft delete's first step, in its shard's slot: it appends the entry
// (KEYS[1] the shard; ARGV: the row's value key, the change, the id of the pending
// write it supersedes or ”) with, for a pending write, that write's change (field b).
var appendScript = redis.NewScript(`
if ARGV[3] == '' then
  return redis.call('XADD', KEYS[1], '*', 'k', ARGV[1], 'd', ARGV[2])
end
local m = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
if #m == 0 then return redis.error_reply('pending write ' .. ARGV[3] .. ' of ' .. ARGV[1] .. ' is not in the journal') end
local based
for i = 1, #m[1][2], 2 do
  if m[1][2][i] == 'd' then based = m[1][2][i + 1] end
end
if not based then return redis.error_reply('journal entry ' .. ARGV[3] .. ' has no change') end
return redis.call('XADD', KEYS[1], '*', 'k', ARGV[1], 'd', ARGV[2], 'b', based)
`)

// Outcomes of land.
const (
	landed     = 1
	superseded = 2
	late       = 3
	raced      = 4
)

// AOFWait asks Journal to wait until the write is fsynced to the append-only file of
// the master and of Replicas replicas (WAITAOF), for at most Timeout.
type AOFWait struct {
	Replicas int
	Timeout  time.Duration
}

// Journal records a write-back write of the row k in journal prefix p: it appends
// change to the row's journal shard, makes entry the row's pending record and its
// cached value (for ttl; ttl 0 deletes the value key instead, leaving the pending
// record to answer reads), and deletes the row's fence, so fills that began before
// are refused. On a single Redis that is one script; on a Cluster two steps (see the
// top of this file), and ErrLate reports a write refused at its second step. It
// returns the write's version (the journal entry id), "" for a write that was
// superseded by a concurrent later write of the row while it landed.
//
// Like TakeLease, it records m in the registry first, in the same round trip: the
// invalidator must know the version of the value key it sets.
//
// With wait, WAITAOF follows each step on the same connection (WAITAOF waits only for
// the writes of the connection it is sent on; on a Cluster each step goes to its
// master's connection without following redirects, so a write during resharding
// fails). When the write was journaled but the wait failed, the id is returned with an
// error wrapping ErrNotDurable, and also ErrUnsupported when the server does not know
// WAITAOF (before Redis 7.2).
func (s *Store) Journal(ctx context.Context, m Model, p keys.Prefix, k keys.Key, entry []byte, ttl time.Duration, change []byte, wait *AOFWait) (string, error) {
	if m.index == "" {
		return "", fmt.Errorf("store: journal %s: the Model has no table index; build it with NewModel", k)
	}
	ctx, cancel := s.writeCtx(ctx, wait)
	defer cancel()
	shard := p.JournalShard(keys.JournalShardOf(k))
	hook := testhooks.BeforeLanding(ctx)
	args := []any{entry, ttlMillis(ttl), LandedTTL.Milliseconds()}
	if _, cluster := s.rdb.(*redis.ClusterClient); !cluster && hook == nil {
		var cmd *redis.Cmd
		err := s.step(ctx, k.Value(), wait, func(p redis.Pipeliner) {
			cmd = journalScript.EvalSha(ctx, p, s.landKeys(ctx, k, shard), append(args, 0, change)...)
		}, journalScript, m, ttl, k)
		id, _ := cmd.Val().(string)
		if err != nil {
			return durable(id, err, k)
		}
		return id, nil
	}
	var add *redis.StringCmd
	err := s.step(ctx, shard, wait, func(p redis.Pipeliner) {
		add = p.XAdd(ctx, &redis.XAddArgs{Stream: shard, Values: []any{fieldKey, k.Value(), fieldChange, change}})
	}, nil, m, ttl, k)
	id := add.Val()
	if err != nil && (id == "" || !errors.Is(err, ErrNotDurable)) {
		return "", fmt.Errorf("store: journal %s: %w", k, err)
	}
	if hook != nil {
		hook(id)
	}
	out, lerr := s.land(ctx, k, id, args, nil, wait)
	switch {
	case lerr != nil:
		return "", lerr
	case out == superseded:
		return "", err
	}
	return id, err
}

// durable returns a write's id and error: the id with err when only the AOF wait
// failed, else "" and err.
func durable(id string, err error, k keys.Key) (string, error) {
	if errors.Is(err, ErrNotDurable) && id != "" {
		return id, err
	}
	return "", fmt.Errorf("store: journal %s: %w", k, err)
}

// land runs a write's second step for entry id; base as in landLua ("-" for none). It
// returns the outcome landed or superseded, or an error: ErrLate, ErrRaced (for raced:
// the caller may try again), or ErrNotDurable when only the wait failed.
func (s *Store) land(ctx context.Context, k keys.Key, id string, args []any, base *string, wait *AOFWait) (int64, error) {
	largs := append(append([]any(nil), args...), 0, id)
	largs[3] = landWithin.Milliseconds()
	if base != nil {
		largs = append(largs, *base)
	}
	var cmd *redis.Cmd
	err := s.step(ctx, k.Value(), wait, func(p redis.Pipeliner) {
		cmd = landScript.EvalSha(ctx, p, s.landKeys(ctx, k, ""), largs...)
	}, landScript, Model{}, 0, k)
	out, cerr := cmd.Int64()
	if cerr != nil {
		return 0, fmt.Errorf("store: land %s %s: %w", k, id, cmp.Or(err, cerr))
	}
	switch out {
	case late:
		return out, fmt.Errorf("%w: %s %s", ErrLate, k, id)
	case raced:
		return out, fmt.Errorf("%w: %s %s", ErrRaced, k, id)
	}
	return out, err
}

// landKeys returns KEYS of the landing scripts: V, F, P, D, L, and the shard if not "".
func (s *Store) landKeys(ctx context.Context, k keys.Key, shard string) []string {
	deps := k.Deps()
	if testhooks.KeepEpoch(ctx) {
		deps = k.Fence() // deleted anyway: the epoch is kept
	}
	ks := []string{k.Value(), k.Fence(), k.Pending(), deps, k.Landed()}
	if shard != "" {
		ks = append(ks, shard)
	}
	return ks
}

// writeCtx bounds a write: by the Store's timeout, or with wait by its timeout and
// the Store's.
func (s *Store) writeCtx(ctx context.Context, wait *AOFWait) (context.Context, context.CancelFunc) {
	if wait == nil {
		return s.ctx(ctx)
	}
	return context.WithTimeout(ctx, wait.Timeout+max(s.timeout, time.Second))
}

// step runs one step of a write: fill's commands on the server of key (the cluster
// client routes them; with wait, they go to key's master, so that WAITAOF after them is
// on the same connection), after m's registry announcement and index entry for k (when
// m is not the zero Model; on the cluster client, in the same pipeline). It returns
// the first error of the commands; an error wrapping ErrNotDurable when only the wait
// failed.
func (s *Store) step(ctx context.Context, key string, wait *AOFWait, fill func(p redis.Pipeliner), script *redis.Script, m Model, ttl time.Duration, k keys.Key) error {
	var (
		reg    announcement
		idx    *redis.Cmd
		waited *redis.Cmd
	)
	pre := func(p redis.Pipeliner) {
		if m.index != "" {
			reg = s.announce(ctx, p, m)
			idx = indexScript.Eval(ctx, p, []string{m.index}, indexArgs(ttl, []keys.Key{k})...)
		}
	}
	var c pipeClient = s.rdb
	if wait != nil {
		if cc, ok := s.rdb.(*redis.ClusterClient); ok {
			if m.index != "" {
				if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { pre(p); return nil }); err != nil {
					return err
				}
				m = Model{}
			}
			node, err := cc.MasterForKey(ctx, key)
			if err != nil {
				return err
			}
			c = node
		}
	}
	perr := pipelinedOn(ctx, c, func(p redis.Pipeliner) {
		if m.index != "" {
			pre(p)
		}
		fill(p)
		if wait != nil {
			waited = p.Do(ctx, "WAITAOF", 1, wait.Replicas, max(wait.Timeout.Milliseconds(), 1))
		}
	}, script)
	if reg[0] != nil {
		if err := reg.Err(); err != nil {
			return err
		}
	}
	if idx != nil && idx.Err() != nil {
		return idx.Err()
	}
	if perr != nil && (waited == nil || waited.Err() == nil || perr != waited.Err()) {
		return perr
	}
	if wait != nil {
		if err := aofWaited(waited, wait); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrNotDurable, k, err)
		}
	}
	return nil
}

// Ring reports whether the Store's client is a Ring, on which write-back cannot work.
func (s *Store) Ring() bool {
	_, ring := s.rdb.(*redis.Ring)
	return ring
}

// pipeClient is what a step's pipeline runs on: the Store's client or a Cluster node.
type pipeClient interface {
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	redis.Scripter
}

// pipelinedOn is pipelined on c, loading script after NOSCRIPT.
func pipelinedOn(ctx context.Context, c pipeClient, fill func(p redis.Pipeliner), script *redis.Script) error {
	for loaded := false; ; loaded = true {
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			fill(p)
			return nil
		})
		if err == nil || loaded || script == nil || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			return err
		}
		if err := script.Load(ctx, c).Err(); err != nil {
			return err
		}
	}
}

func ttlMillis(ttl time.Duration) int64 {
	if ttl > 0 {
		return max(ttl.Milliseconds(), 1)
	}
	return 0
}

// SoftDeleteOutcome says what SoftDelete did.
type SoftDeleteOutcome uint8

const (
	// SoftDeleted: the soft delete was journaled.
	SoftDeleted SoftDeleteOutcome = iota + 1
	// AlreadyDeleted: the row's pending write deletes it already (a delete, or an
	// earlier soft delete); nothing was journaled, as a soft delete of a row already
	// deleted changes nothing in Postgres.
	AlreadyDeleted
	// OtherVersionPending: the row's pending write is another schema version's (its
	// entry does not start with m.Entry); nothing was journaled.
	OtherVersionPending
)

// softDeleteTries is how many times SoftDelete tries when it races with other writes.
const softDeleteTries = 3

// SoftDelete journals a soft delete of the row k of a write-back model whose entries
// start with m.Entry, like Journal, with an entry built from the row's pending write,
// if it has one: m.Entry, then head, then the pending write's entry (empty when there
// is none: the row is Postgres'). The journal entry carries change and, when there is
// a pending write, that write's change too (field b), because the soft delete
// supersedes it in the flusher, which must apply both.
//
// It is three steps on every topology: read the pending record, append the entry, land
// it if the pending record is still the one read (else try again, up to three times,
// then ErrRaced).
func (s *Store) SoftDelete(ctx context.Context, m Model, p keys.Prefix, k keys.Key, head string, ttl time.Duration, change []byte, wait *AOFWait) (SoftDeleteOutcome, string, error) {
	if m.index == "" {
		return 0, "", fmt.Errorf("store: soft delete %s: the Model has no table index; build it with NewModel", k)
	}
	ctx, cancel := s.writeCtx(ctx, wait)
	defer cancel()
	shard := p.JournalShard(keys.JournalShardOf(k))
	var err error
	for range softDeleteTries {
		var pv []any
		pv, err = s.rdb.HMGet(ctx, k.Pending(), "v", "e").Result()
		if err != nil {
			return 0, "", fmt.Errorf("store: soft delete %s: read pending record: %w", k, err)
		}
		baseID, _ := pv[0].(string)
		base, _ := pv[1].(string)
		if baseID != "" {
			if !strings.HasPrefix(base, m.Entry) {
				return OtherVersionPending, "", nil
			}
			if !strings.HasPrefix(base[len(m.Entry):], "v") {
				return AlreadyDeleted, "", nil
			}
		}
		if hook := testhooks.AfterPendingRead(ctx); hook != nil {
			hook()
		}
		entry := m.Entry + head + base
		var add *redis.Cmd
		err = s.step(ctx, shard, wait, func(pp redis.Pipeliner) {
			add = appendScript.EvalSha(ctx, pp, []string{shard}, k.Value(), change, baseID)
		}, appendScript, m, ttl, k)
		id, _ := add.Val().(string)
		if err != nil && (id == "" || !errors.Is(err, ErrNotDurable)) {
			return 0, "", fmt.Errorf("store: soft delete %s: %w", k, err)
		}
		if hook := testhooks.BeforeLanding(ctx); hook != nil {
			hook(id)
		}
		args := []any{entry, ttlMillis(ttl), LandedTTL.Milliseconds()}
		on := &baseID
		if testhooks.UncheckedBase(ctx) {
			on = nil
		}
		out, lerr := s.land(ctx, k, id, args, on, wait)
		switch {
		case errors.Is(lerr, ErrRaced):
			err = lerr
			continue
		case lerr != nil:
			return 0, "", lerr
		case out == superseded:
			return SoftDeleted, "", err
		}
		return SoftDeleted, id, err
	}
	return 0, "", err
}

var ErrNotDurable = errors.New("store: journaled, but not confirmed durable")

// aofWaited checks WAITAOF's reply: how many servers (local, replicas) fsynced.
func aofWaited(cmd *redis.Cmd, w *AOFWait) error {
	got, err := cmd.Int64Slice()
	if err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "unknown command") {
			return fmt.Errorf("%w: WAITAOF: %v", ErrUnsupported, err)
		}
		return fmt.Errorf("waitaof: %w", err)
	}
	if len(got) != 2 || got[0] < 1 || got[1] < int64(w.Replicas) {
		return fmt.Errorf("waitaof: fsynced on %v (local, replicas) within %v, want 1 local and %d replicas", got, w.Timeout, w.Replicas)
	}
	return nil
}

// JournalEntry is one entry of the journal as read by a flusher.
type JournalEntry struct {
	// ID is the entry's stream id: the write's version.
	ID string
	// Stream is the journal stream (shard) the entry is in.
	Stream string
	// Key is the row's value key ("" when the entry is malformed).
	Key string
	// Change is the change recorded by the writer, opaque to the store.
	Change string
	// Base is, for a soft delete journaled over a pending write (see SoftDelete), the
	// change of that write, to apply before Change; "" otherwise.
	Base string
	// Empty is set for an entry that was deleted from the stream while still pending.
	Empty bool
}

func journalEntries(stream string, msgs []redis.XMessage) []JournalEntry {
	out := make([]JournalEntry, len(msgs))
	for i, m := range msgs {
		e := JournalEntry{ID: m.ID, Stream: stream, Empty: len(m.Values) == 0}
		e.Key, _ = m.Values[fieldKey].(string)
		e.Change, _ = m.Values[fieldChange].(string)
		e.Base, _ = m.Values[fieldBase].(string)
		out[i] = e
	}
	return out
}

// CreateGroup creates the consumer group on the journal, starting at its first entry,
// creating the journal if needed. A group that exists already is left alone.
func (s *Store) CreateGroup(ctx context.Context, journal, group string) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	err := s.rdb.XGroupCreateMkStream(ctx, journal, group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("store: create group %s on %s: %w", group, journal, err)
	}
	return nil
}

// ReadJournals reads up to count entries of each journal stream for consumer. With own
// set it reads the entries already delivered to consumer and not acknowledged (after
// a restart or a failed flush), without blocking; otherwise new entries, blocking up
// to block when there are none (block <= 0: not at all). On a single Redis that is one
// XREADGROUP of every stream; on a Cluster, where the streams are in different slots,
// one non-blocking XREADGROUP per stream in a pipeline, and when none returned
// anything a wait of block (or until ctx ends) before returning nothing: the caller
// chooses how often a Cluster's streams are polled.
func (s *Store) ReadJournals(ctx context.Context, streams []string, group, consumer string, count int, block time.Duration, own bool) ([]JournalEntry, error) {
	id := ">"
	if own {
		id, block = "0", -1
	}
	if !own && block <= 0 {
		block = -1
	}
	if _, cluster := s.rdb.(*redis.ClusterClient); cluster {
		return s.readEach(ctx, streams, group, consumer, id, count, block)
	}
	args := make([]string, 0, 2*len(streams))
	args = append(args, streams...)
	for range streams {
		args = append(args, id)
	}
	wait := max(block, 0) + max(s.timeout, time.Second)
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: group, Consumer: consumer, Streams: args, Count: int64(count), Block: block,
	}).Result()
	if err == redis.Nil {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: read journal: %w", groupErr(err))
	}
	var out []JournalEntry
	for _, st := range res {
		out = append(out, journalEntries(st.Stream, st.Messages)...)
	}
	return out, nil
}

// readEach is ReadJournals on a Cluster.
func (s *Store) readEach(ctx context.Context, streams []string, group, consumer, id string, count int, block time.Duration) ([]JournalEntry, error) {
	rctx, cancel := s.ctx(ctx)
	cmds := make([]*redis.XStreamSliceCmd, len(streams))
	_, err := s.rdb.Pipelined(rctx, func(p redis.Pipeliner) error {
		for i, st := range streams {
			cmds[i] = p.XReadGroup(rctx, &redis.XReadGroupArgs{Group: group, Consumer: consumer, Streams: []string{st, id}, Count: int64(count), Block: -1})
		}
		return nil
	})
	cancel()
	var out []JournalEntry
	for _, c := range cmds {
		res, cerr := c.Result()
		if cerr != nil && cerr != redis.Nil {
			return nil, fmt.Errorf("store: read journal: %w", groupErr(cerr))
		}
		for _, st := range res {
			out = append(out, journalEntries(st.Stream, st.Messages)...)
		}
	}
	if err != nil && err != redis.Nil {
		return nil, fmt.Errorf("store: read journal: %w", groupErr(err))
	}
	if len(out) == 0 && block > 0 {
		t := time.NewTimer(block)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return out, nil
}

// ClaimJournal moves to consumer up to count entries that were delivered to any
// consumer of the group and not acknowledged for at least minIdle (XAUTOCLAIM). A scan
// of the group's unacknowledged entries starts with cursor "" and goes on with the
// cursor each call returns, "" again once it went through the whole list; after an
// error the cursor is the one given.
func (s *Store) ClaimJournal(ctx context.Context, journal, group, consumer string, minIdle time.Duration, cursor string, count int) ([]JournalEntry, string, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	msgs, next, err := s.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: journal, Group: group, Consumer: consumer, MinIdle: minIdle, Start: cmp.Or(cursor, scanStart), Count: int64(count),
	}).Result()
	if err != nil && err != redis.Nil {
		return nil, cursor, fmt.Errorf("store: claim journal %s: %w", journal, groupErr(err))
	}
	if next == scanStart {
		next = ""
	}
	return journalEntries(journal, msgs), next, nil
}

// scanStart is where an XAUTOCLAIM scan starts, and the cursor it returns at its end.
const scanStart = "0-0"

// groupErr returns err, wrapping ErrNoGroup too when Redis says the group (or the
// stream) does not exist.
func groupErr(err error) error {
	if strings.Contains(err.Error(), "NOGROUP") {
		return fmt.Errorf("%w: %w", ErrNoGroup, err)
	}
	return err
}

// CompareIDs orders the ids of two entries of a stream, such as the versions of two
// journaled writes ("<ms>-<seq>"), as Redis does: it returns -1 when a is earlier
// than b, 0 when they are equal, +1 when a is later.
func CompareIDs(a, b string) int {
	am, as := splitID(a)
	bm, bs := splitID(b)
	return cmp.Or(cmp.Compare(am, bm), cmp.Compare(as, bs))
}

func splitID(id string) (ms, seq uint64) {
	m, q, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(m, 10, 64)
	seq, _ = strconv.ParseUint(q, 10, 64)
	return ms, seq
}

// ackLua defines ack(stream, group, first, last): it acknowledges the entries
// ARGV[first..last] of group in stream and trims the stream below the oldest entry any
// group still needs: its oldest unacknowledged entry, or, when it has none, the entry
// after the last one it was given. Entries past that were never delivered, and entries
// a consumer holds are never trimmed, so no group loses an entry it has not
// acknowledged. (Deleting each acknowledged entry with XDEL costs about three times as
// much as the rest of the acknowledgement.) It returns how many it acknowledged.
const ackLua = idLua + `
local function ack(stream, group, first, last)
  if redis.call('EXISTS', stream) == 0 then return 0 end
  local acked = 0
  for i = first, last, 1000 do
    acked = acked + redis.call('XACK', stream, group, unpack(ARGV, i, math.min(i + 999, last)))
  end
  local minms, minseq
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local name, lastid
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then lastid = g[i + 1] end
    end
    local ms, seq
    local p = redis.call('XPENDING', stream, name)
    if p[2] then
      ms, seq = parse(p[2])
    else
      ms, seq = parse(lastid)
      seq = seq + 1
    end
    if not minms or ms < minms or ms == minms and seq < minseq then
      minms, minseq = ms, seq
    end
  end
  if minms then
    redis.call('XTRIM', stream, 'MINID', string.format('%d-%d', minms, minseq))
  end
  return acked
end
`

// ackScript acknowledges entries (ARGV[2..]) of group ARGV[1] in the stream KEYS[1]
// and trims it (see ackLua).
var ackScript = redis.NewScript(ackLua + `
return ack(KEYS[1], ARGV[1], 2, #ARGV)
`)

// ackArgs returns ackScript's arguments for the entries ids of group.
func ackArgs(group string, ids []string) []any {
	args := make([]any, 0, len(ids)+1)
	args = append(args, group)
	for _, id := range ids {
		args = append(args, id)
	}
	return args
}

// withEntries returns the streams of ids that have entries, and how many entries
// they have in all.
func withEntries(ids map[string][]string) (streams []string, n int) {
	streams = make([]string, 0, len(ids))
	for st, l := range ids {
		if len(l) > 0 {
			streams = append(streams, st)
			n += len(l)
		}
	}
	return streams, n
}

// AckJournals acknowledges journal entries, given by stream, and trims each stream of
// the entries no consumer group needs any more, in one script per stream, pipelined:
// once a flusher is done with an entry nothing reads it again.
func (s *Store) AckJournals(ctx context.Context, group string, ids map[string][]string) error {
	streams, n := withEntries(ids)
	if n == 0 {
		return nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	cmds, err := s.evalShaMany(ctx, ackScript, len(streams), func(i int) ([]string, []any) {
		return []string{streams[i]}, ackArgs(group, ids[streams[i]])
	})
	for _, c := range cmds {
		if c.Err() != nil {
			err = c.Err()
		}
	}
	if err != nil {
		return fmt.Errorf("store: ack %d journal entries: %w", n, err)
	}
	return nil
}

// JournalLen returns the number of entries in the journal streams: those not yet
// acknowledged, and acknowledged ones behind an older unacknowledged entry (trimming
// keeps everything from the oldest unacknowledged entry on). It is 0 once every entry
// was acknowledged.
func (s *Store) JournalLen(ctx context.Context, streams ...string) (int64, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	cmds := make([]*redis.IntCmd, len(streams))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, st := range streams {
			cmds[i] = p.XLen(ctx, st)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: length of the journal: %w", err)
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, nil
}

// JournalStreams returns the streams of prefix p's journal: its shards, and the single
// journal of earlier versions when it holds entries (a flusher drains it too).
func (s *Store) JournalStreams(ctx context.Context, p keys.Prefix) ([]string, error) {
	out := make([]string, 0, keys.JournalShards+1)
	for i := range keys.JournalShards {
		out = append(out, p.JournalShard(i))
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	n, err := s.rdb.Exists(ctx, p.Journal()).Result()
	if err != nil {
		return nil, fmt.Errorf("store: look for %s: %w", p.Journal(), err)
	}
	if n > 0 {
		out = append(out, p.Journal())
	}
	return out, nil
}

// statesScript returns, for each row (KEYS: P and L of each; ARGV: the id of each
// row's latest write the caller knows of), the version its pending record holds and
// its landing mark, "" for none; the landing mark only when the pending record does
// not hold that id (it is not needed then, and reading it costs a call a row).
var statesScript = redis.NewScript(`
local out = {}
for i = 1, #KEYS, 2 do
  local v = redis.call('HGET', KEYS[i], 'v') or ''
  out[i] = v
  if v == ARGV[(i + 1) / 2] then
    out[i + 1] = ''
  else
    out[i + 1] = redis.call('GET', KEYS[i + 1]) or ''
  end
end
return out
`)

// RowState is what a flusher needs to know of a row to decide about an entry.
type RowState struct {
	// Version is the journal entry id of the row's pending write, "" for none.
	Version string
	// Landed is the row's landing mark (see keys.Key.Landed), "" for none; not read
	// (so "") when Version is the id the caller gave for the row.
	Landed string
}

// RowStates returns the state of each row ks names, as PendingVersions reads versions;
// latest[i] is the id of the latest write of row ks[i] the caller knows of: when the
// row's pending record holds it, its landing mark is not read.
func (s *Store) RowStates(ctx context.Context, ks []keys.Key, latest []string) ([]RowState, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	groups := s.slotGroups(ks)
	cmds, err := s.evalShaMany(ctx, statesScript, len(groups), func(g int) ([]string, []any) {
		pk := make([]string, 0, 2*len(groups[g]))
		args := make([]any, 0, len(groups[g]))
		for _, i := range groups[g] {
			pk = append(pk, ks[i].Pending(), ks[i].Landed())
			args = append(args, latest[i])
		}
		return pk, args
	})
	if err != nil {
		return nil, fmt.Errorf("store: read %d rows' write-back state: %w", len(ks), err)
	}
	out := make([]RowState, len(ks))
	for g, c := range cmds {
		vs, err := c.StringSlice()
		if err != nil || len(vs) != 2*len(groups[g]) {
			return nil, fmt.Errorf("store: read rows' write-back state: reply %v, %v", vs, err)
		}
		for j, i := range groups[g] {
			out[i] = RowState{Version: vs[2*j], Landed: vs[2*j+1]}
		}
	}
	return out, nil
}

// fenceScript fences entries that did not land. KEYS: P and L of each row; ARGV[1]:
// L's TTL in ms; ARGV[1 + i]: row i's entry id. For each it returns 2 if the entry has
// landed and is pending (P holds it); else 1, after setting L to the id unless L is at
// or past it already: the entry will never land.
var fenceScript = redis.NewScript(idLua + `
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[2 * i - 3], 'v') == id then
    out[i - 1] = 2
  else
    local l = redis.call('GET', KEYS[2 * i - 2])
    if not l or later(id, l) then
      redis.call('SET', KEYS[2 * i - 2], id, 'PX', ARGV[1])
    end
    out[i - 1] = 1
  end
end
return out
`)

// FenceEntries makes sure that the writes items name never land (see the top of this
// file), unless they have: fenced[i] is false when items[i]'s entry landed and is the
// row's pending write.
func (s *Store) FenceEntries(ctx context.Context, items []Versioned) ([]bool, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	ks := versionedKeys(items)
	groups := s.slotGroups(ks)
	cmds, err := s.evalShaMany(ctx, fenceScript, len(groups), func(g int) ([]string, []any) {
		pk := make([]string, 0, 2*len(groups[g]))
		args := make([]any, 0, 1+len(groups[g]))
		args = append(args, LandedTTL.Milliseconds())
		for _, i := range groups[g] {
			pk = append(pk, ks[i].Pending(), ks[i].Landed())
			args = append(args, items[i].Version)
		}
		return pk, args
	})
	if err != nil {
		return nil, fmt.Errorf("store: fence %d journal entries: %w", len(items), err)
	}
	out := make([]bool, len(items))
	for g, c := range cmds {
		ns, err := c.Int64Slice()
		if err != nil || len(ns) != len(groups[g]) {
			return nil, fmt.Errorf("store: fence journal entries: reply %v, %v", ns, err)
		}
		for j, i := range groups[g] {
			out[i] = ns[j] == 1
		}
	}
	return out, nil
}

// versionsScript returns the version of each pending record in KEYS, "" for none.
var versionsScript = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do out[i] = redis.call('HGET', k, 'v') or '' end
return out
`)

// PendingVersions returns the version of each row's pending record, "" where it has
// none: one script call per hash slot (on a single Redis, for all rows), by chunks of
// scriptRows rows, pipelined.
func (s *Store) PendingVersions(ctx context.Context, ks []keys.Key) ([]string, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	groups := s.slotGroups(ks)
	cmds, err := s.evalShaMany(ctx, versionsScript, len(groups), func(g int) ([]string, []any) {
		pk := make([]string, len(groups[g]))
		for j, i := range groups[g] {
			pk[j] = ks[i].Pending()
		}
		return pk, nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: read %d pending records: %w", len(ks), err)
	}
	out := make([]string, len(ks))
	for g, c := range cmds {
		vs, err := c.StringSlice()
		if err != nil || len(vs) != len(groups[g]) {
			return nil, fmt.Errorf("store: read pending records: reply %v, %v", vs, err)
		}
		for j, i := range groups[g] {
			out[i] = vs[j]
		}
	}
	return out, nil
}

// scriptRows is the most rows one script call of the flusher's handles. Redis serves
// no other client while a script runs: one call over a batch of 1,000 rows held every
// application's reads up for 11–16 ms (Redis' slow log, on a busy 2-CPU machine); a
// call over scriptRows takes 1–4 ms there. The calls of a batch still go in one round
// trip (a pipeline).
const scriptRows = 100

// slotGroups splits the indexes of ks into groups whose keys may go to one script: on
// a Cluster client the rows of one hash slot, else all rows; by chunks of at most
// scriptRows rows.
func (s *Store) slotGroups(ks []keys.Key) [][]int {
	const chunk = scriptRows
	var groups [][]int
	add := func(idx []int) {
		for len(idx) > chunk {
			groups = append(groups, idx[:chunk:chunk])
			idx = idx[chunk:]
		}
		if len(idx) > 0 {
			groups = append(groups, idx)
		}
	}
	if _, cluster := s.rdb.(*redis.ClusterClient); !cluster {
		all := make([]int, len(ks))
		for i := range all {
			all[i] = i
		}
		add(all)
		return groups
	}
	bySlot := make(map[uint16][]int)
	var order []uint16
	for i, k := range ks {
		slot := keys.HashSlot(k.Value())
		if _, ok := bySlot[slot]; !ok {
			order = append(order, slot)
		}
		bySlot[slot] = append(bySlot[slot], i)
	}
	for _, slot := range order {
		add(bySlot[slot])
	}
	return groups
}

// clearLua defines clear(n, flag, first): it deletes the P of each of the n rows whose
// keys are KEYS[4i-3..4i] (P, V, F, D) if P still records the version ARGV[first + i -
// 1]; with flag "1" also the row's V, F and D (keys.Key.Deps), so readers and cached
// HTTP responses go back to Postgres. It returns 1 or 0 per row. The keys are deleted
// at the end, by a few DELs of many keys each: a DEL per row costs as much again in
// the script's calls as in the deletions.
const clearLua = `
local function clear(n, flag, first)
  local out, del = {}, {}
  for i = 1, n do
    local p = KEYS[4 * i - 3]
    if redis.call('HGET', p, 'v') == ARGV[first + i - 1] then
      del[#del + 1] = p
      if flag == '1' then
        del[#del + 1] = KEYS[4 * i - 2]
        del[#del + 1] = KEYS[4 * i - 1]
        del[#del + 1] = KEYS[4 * i]
      end
      out[i] = 1
    else
      out[i] = 0
    end
  end
  for i = 1, #del, 1000 do
    redis.call('DEL', unpack(del, i, math.min(i + 999, #del)))
  end
  return out
end
`

// clearScript runs clear (see clearLua) for every row of KEYS: ARGV[1] is the flag,
// ARGV[1 + i] row i's version.
var clearScript = redis.NewScript(clearLua + `
return clear(#KEYS / 4, ARGV[1], 2)
`)

// Versioned names one write: a row and the version of the write.
type Versioned struct {
	Key     keys.Key
	Version string
}

// ClearPending deletes the pending records of rows whose write was applied, each only
// if it still records that write: a newer write of the row stays pending. With
// invalidate set it also deletes the rows' value and fence keys, so that readers see
// Postgres again (for writes applied, or given up on). One script call per hash slot (see
// PendingVersions); cleared[i] reports items[i].
func (s *Store) ClearPending(ctx context.Context, items []Versioned, invalidate bool) ([]bool, error) {
	if len(items) == 0 {
		return nil, nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	groups := s.slotGroups(versionedKeys(items))
	cmds, err := s.evalShaMany(ctx, clearScript, len(groups), func(g int) ([]string, []any) {
		return clearCall(items, groups[g], invalidate)
	})
	if err != nil {
		return nil, fmt.Errorf("store: clear %d pending records: %w", len(items), err)
	}
	return cleared(cmds, groups, len(items))
}

// versionedKeys returns the rows items name, in order.
func versionedKeys(items []Versioned) []keys.Key {
	ks := make([]keys.Key, len(items))
	for i, it := range items {
		ks[i] = it.Key
	}
	return ks
}

// clearCall returns the keys and arguments of clearScript for the rows items[i] of
// group (see clearLua).
func clearCall(items []Versioned, group []int, invalidate bool) ([]string, []any) {
	flag := "0"
	if invalidate {
		flag = "1"
	}
	ks := make([]string, 0, 4*len(group))
	args := make([]any, 0, 1+len(group))
	args = append(args, flag)
	for _, i := range group {
		k := items[i].Key
		ks = append(ks, k.Pending(), k.Value(), k.Fence(), k.Deps())
		args = append(args, items[i].Version)
	}
	return ks, args
}

// cleared returns, for each of n items, whether the clear script's call of its group
// (cmds[g] for groups[g]) deleted its pending record.
func cleared(cmds []*redis.Cmd, groups [][]int, n int) ([]bool, error) {
	out := make([]bool, n)
	for g, c := range cmds {
		ns, err := c.Int64Slice()
		if err != nil || len(ns) != len(groups[g]) {
			return nil, fmt.Errorf("store: clear pending records: reply %v, %v", ns, err)
		}
		for j, i := range groups[g] {
			out[i] = ns[j] == 1
		}
	}
	return out, nil
}

// ClearAndAck is ClearPending of items with invalidate set, then AckJournals of ids:
// on a single Redis in one pipeline, so that a batch's acknowledgement costs one round
// trip; on a Cluster, where rows and journal shards are in different slots, the two
// one after the other. Either way the pending records are cleared before the entries
// are acknowledged: a flusher that stops between the two leaves the entries to be
// applied again, never a pending record whose entry is gone. (Redis runs a pipeline's
// commands in order; when it had to learn a script, the pipeline runs again, and both
// steps may run twice.)
func (s *Store) ClearAndAck(ctx context.Context, items []Versioned, group string, ids map[string][]string) ([]bool, error) {
	if _, cluster := s.rdb.(*redis.ClusterClient); cluster || len(items) == 0 {
		out, err := s.ClearPending(ctx, items, true)
		if err != nil {
			return nil, err
		}
		return out, s.AckJournals(ctx, group, ids)
	}
	groups := s.slotGroups(versionedKeys(items))
	streams, nids := withEntries(ids)
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	clears := make([]*redis.Cmd, len(groups))
	acks := make([]*redis.Cmd, len(streams))
	err := s.pipelined(ctx, func(p redis.Pipeliner) {
		for g := range groups {
			ks, args := clearCall(items, groups[g], true)
			clears[g] = clearScript.EvalSha(ctx, p, ks, args...)
		}
		for i, st := range streams {
			acks[i] = ackScript.EvalSha(ctx, p, []string{st}, ackArgs(group, ids[st])...)
		}
	}, clearScript, ackScript)
	if err != nil {
		return nil, fmt.Errorf("store: clear %d pending records and ack %d journal entries: %w", len(items), nids, err)
	}
	return cleared(clears, groups, len(items))
}

// AppendStream adds an entry with these fields (name, value, name, value...) to a
// stream, in one round trip for all entries.
func (s *Store) AppendStream(ctx context.Context, stream string, entries [][]string) error {
	if len(entries) == 0 {
		return nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, fields := range entries {
			vals := make([]any, len(fields))
			for i, f := range fields {
				vals[i] = f
			}
			p.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: vals})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: append %d entries to %s: %w", len(entries), stream, err)
	}
	return nil
}

// StreamEntry is an entry of a stream read with ReadStream.
type StreamEntry struct {
	ID     string
	Fields map[string]string
}

// ReadStream returns up to count entries of a stream from its start.
func (s *Store) ReadStream(ctx context.Context, stream string, count int) ([]StreamEntry, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	msgs, err := s.rdb.XRangeN(ctx, stream, "-", "+", int64(count)).Result()
	if err != nil {
		return nil, fmt.Errorf("store: read %s: %w", stream, err)
	}
	out := make([]StreamEntry, len(msgs))
	for i, m := range msgs {
		out[i] = StreamEntry{ID: m.ID, Fields: make(map[string]string, len(m.Values))}
		for k, v := range m.Values {
			out[i].Fields[k], _ = v.(string)
		}
	}
	return out, nil
}

// evalShaMany runs script n times in one pipeline with EVALSHA (see pipelined).
func (s *Store) evalShaMany(ctx context.Context, script *redis.Script, n int, call func(i int) ([]string, []any)) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, n)
	err := s.pipelined(ctx, func(p redis.Pipeliner) {
		for i := range cmds {
			ks, args := call(i)
			cmds[i] = script.EvalSha(ctx, p, ks, args...)
		}
	}, script)
	return cmds, err
}

// pruneScript deletes from group ARGV[1] of the stream KEYS[1] every consumer other than
// ARGV[2] that holds no pending entry and has been idle for more than ARGV[3]
// milliseconds, and returns how many it deleted. Checking and deleting in one script
// means a consumer cannot take an entry between the two, which DELCONSUMER would lose.
var pruneScript = redis.NewScript(`
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
	local f = {}
	for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
	if f['name'] ~= ARGV[2] and tonumber(f['pending']) == 0 and tonumber(f['idle']) > tonumber(ARGV[3]) then
		redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
		n = n + 1
	end
end
return n`)

// PruneConsumers deletes the consumers of group that hold nothing and have been idle
// longer than idle: flushers that stopped, whose entries were claimed by others.
func (s *Store) PruneConsumers(ctx context.Context, journal, group, self string, idle time.Duration) (int, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	n, err := pruneScript.Run(ctx, s.rdb, []string{journal}, group, self, idle.Milliseconds()).Int()
	if err != nil {
		return 0, fmt.Errorf("store: prune consumers of %s: %w", group, err)
	}
	return n, nil
}
