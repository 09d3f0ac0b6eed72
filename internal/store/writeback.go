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

// Write-back keeps, for each prefix, one journal (a Redis Stream read by a consumer
// group of flushers) and, for each row with a write not yet in Postgres, a pending
// record P (a hash in the row's hash slot), named by keys.Prefix.Journal,
// keys.Prefix.DeadLetter and keys.Key.Pending:
//
//	<prefix>:journal     stream; each entry: k = the row's value key, d = the change
//	<prefix>:deadletter  stream; writes that could not be applied, with the reason
//	<prefix>{row}:p      hash;   v = the journal entry id of the row's latest write,
//	                             e = that write's cache entry
//
// A write is one script: XADD the journal entry, set P to its id and entry, set the
// row's value key V to the entry, delete the fence F and the dependency epoch D
// (keys.Key.Deps, so that cached HTTP responses showing the row are not served). So a
// write is either wholly there or not at all, and the journal entry's id is the
// write's version: stream ids only grow, even after P is deleted, so a replayed old
// entry never matches a newer write's P. (A per-row counter kept in P would restart
// at 1 once P is cleared, and an old entry replayed after a crash could then pass for
// the new write.)
//
// The journal and the rows are in different hash slots, so the script needs a single
// Redis (or Sentinel): Redis Cluster rejects it with CROSSSLOT.

// Journal entry fields.
const (
	fieldKey    = "k"
	fieldChange = "d"
	fieldBase   = "b" // a soft delete's: the change of the pending write it supersedes
)

// ErrUnsupported reports a command the Redis server does not know (WAITAOF before 7.2).
var ErrUnsupported = errors.New("store: command not supported by this Redis")

// ErrNoGroup reports a read of the journal by a consumer group it does not have:
// the journal, and the group with it, was deleted. Create the group again.
var ErrNoGroup = errors.New("store: no such consumer group")

// journalScript records one write. KEYS: V, F, P, journal, the table index, D (the
// row's dependency epoch, keys.Key.Deps: deleting it voids the cached HTTP responses
// that showed the row). ARGV: entry, value TTL in ms (0: delete V instead), change.
var journalScript = redis.NewScript(indexLua + `
local id = redis.call('XADD', KEYS[4], '*', 'k', KEYS[1], 'd', ARGV[3])
redis.call('HSET', KEYS[3], 'v', id, 'e', ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  index(ARGV[#ARGV - 1], ARGV[#ARGV])
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('DEL', KEYS[1])
end
redis.call('DEL', KEYS[2], KEYS[6])
return id
`)

// AOFWait asks Journal to wait until the write is fsynced to the append-only file of
// the master and of Replicas replicas (WAITAOF), for at most Timeout.
type AOFWait struct {
	Replicas int
	Timeout  time.Duration
}

// Journal records a write-back write of the row k in one atomic script: it appends
// change to the journal, makes entry the row's pending record and its cached value
// (for ttl; ttl 0 deletes the value key instead, leaving the pending record to answer
// reads), and deletes the row's fence, so fills that began before are refused. It
// returns the write's version (the journal entry id).
//
// Like TakeLease, it records m in the registry first, in the same round trip: the
// invalidator must know the version of the value key it sets.
//
// With wait, WAITAOF follows the script in the same pipeline, so on the same
// connection: WAITAOF waits only for the writes of the connection it is sent on, and
// another pooled connection's last write may precede this one. When the write was
// journaled but the wait failed, the id is returned with an error wrapping
// ErrNotDurable, and also ErrUnsupported when the server does not know WAITAOF
// (before Redis 7.2).
func (s *Store) Journal(ctx context.Context, m Model, journal string, k keys.Key, entry []byte, ttl time.Duration, change []byte, wait *AOFWait) (string, error) {
	reply, err := s.journal(ctx, m, journalScript, k, journal, wait, ttl, entry, ttlMillis(ttl), change)
	if reply == nil {
		return "", err
	}
	id, _ := reply.(string)
	return id, err
}

func ttlMillis(ttl time.Duration) int64 {
	if ttl > 0 {
		return max(ttl.Milliseconds(), 1)
	}
	return 0
}

// journal runs one of the journal scripts (KEYS: V, F, P, journal) after recording
// m in the registry, followed by WAITAOF when asked to, in one pipeline. It returns
// the script's reply, and with it an ErrNotDurable error when only the wait failed.
//
// The scripts run on a single Redis only, so they may touch keys of several slots:
// KEYS[5] is the table's index, to which a script adds the row before it sets its value
// key (see index.go), and the last two ARGV are the index entry's lifetime in ms and how
// many expired entries to prune, appended here for the value's TTL.
func (s *Store) journal(ctx context.Context, m Model, script *redis.Script, k keys.Key, journal string, wait *AOFWait, ttl time.Duration, args ...any) (any, error) {
	if m.index == "" {
		return nil, fmt.Errorf("store: journal %s: the Model has no table index; build it with NewModel", k)
	}
	args = append(args, indexArgs(ttl, nil)...)
	var cancel context.CancelFunc
	if wait == nil {
		ctx, cancel = s.ctx(ctx)
	} else {
		ctx, cancel = context.WithTimeout(ctx, wait.Timeout+max(s.timeout, time.Second))
	}
	defer cancel()
	var (
		reg    announcement
		cmd    *redis.Cmd
		waited *redis.Cmd
	)
	deps := k.Deps()
	if testhooks.KeepEpoch(ctx) {
		deps = k.Fence() // deleted anyway: the epoch is kept
	}
	perr := s.pipelined(ctx, func(p redis.Pipeliner) {
		reg = s.announce(ctx, p, m)
		cmd = script.EvalSha(ctx, p, []string{k.Value(), k.Fence(), k.Pending(), journal, m.index, deps}, args...)
		if wait != nil {
			waited = p.Do(ctx, "WAITAOF", 1, wait.Replicas, max(wait.Timeout.Milliseconds(), 1))
		}
	}, script)
	reply, err := cmd.Result()
	if err == nil {
		err = reg.Err()
	}
	if err == nil && perr != nil && (waited == nil || waited.Err() == nil) {
		err = perr // a failure no command reports
	}
	if err != nil {
		return nil, fmt.Errorf("store: journal %s: %w", k, err)
	}
	if wait != nil {
		if err := aofWaited(waited, wait); err != nil {
			return reply, fmt.Errorf("%w: %s: %w", ErrNotDurable, k, err)
		}
	}
	return reply, nil
}

// softDeleteScript journals a soft delete (see SoftDelete). KEYS: V, F, P, journal,
// the table index, D (as journalScript's).
// ARGV: the model's entry prefix, the entry's soft-delete header, value TTL in ms (0:
// delete V instead), change. Replies: {1, id} journaled; {0} nothing to do (the
// pending write deletes the row already); {2, entry} the pending write is another
// schema version's.
var softDeleteScript = redis.NewScript(indexLua + `
local p = redis.call('HMGET', KEYS[3], 'v', 'e')
local base, based = '', nil
if p[1] and p[2] then
  local e = p[2]
  if string.sub(e, 1, #ARGV[1]) ~= ARGV[1] then return {2, e} end
  if string.sub(e, #ARGV[1] + 1, #ARGV[1] + 1) ~= 'v' then return {0} end
  local m = redis.call('XRANGE', KEYS[4], p[1], p[1])
  if #m == 0 then return redis.error_reply('pending write ' .. p[1] .. ' of ' .. KEYS[1] .. ' is not in the journal') end
  for i = 1, #m[1][2], 2 do
    if m[1][2][i] == 'd' then based = m[1][2][i + 1] end
  end
  if not based then return redis.error_reply('journal entry ' .. p[1] .. ' has no change') end
  base = e
end
local entry = ARGV[1] .. ARGV[2] .. base
local id
if based then
  id = redis.call('XADD', KEYS[4], '*', 'k', KEYS[1], 'd', ARGV[4], 'b', based)
else
  id = redis.call('XADD', KEYS[4], '*', 'k', KEYS[1], 'd', ARGV[4])
end
redis.call('HSET', KEYS[3], 'v', id, 'e', entry)
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  index(ARGV[#ARGV - 1], ARGV[#ARGV])
  redis.call('SET', KEYS[1], entry, 'PX', ttl)
else
  redis.call('DEL', KEYS[1])
end
redis.call('DEL', KEYS[2], KEYS[6])
return {1, id}
`)

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

// SoftDelete journals a soft delete of the row k of a write-back model whose entries
// start with m.Entry, like Journal, with an entry built in the script from the row's
// pending write, if it has one: m.Entry, then head, then the pending write's entry
// (empty when there is none: the row is Postgres'). The journal entry carries change
// and, when there is a pending write, that write's change too (field b), because the
// soft delete supersedes it in the flusher, which must apply both.
func (s *Store) SoftDelete(ctx context.Context, m Model, journal string, k keys.Key, head string, ttl time.Duration, change []byte, wait *AOFWait) (SoftDeleteOutcome, string, error) {
	reply, err := s.journal(ctx, m, softDeleteScript, k, journal, wait, ttl, m.Entry, head, ttlMillis(ttl), change)
	if reply == nil {
		return 0, "", err
	}
	r, _ := reply.([]any)
	if len(r) == 0 {
		return 0, "", fmt.Errorf("store: soft delete %s: unexpected reply %v", k, reply)
	}
	switch n, _ := r[0].(int64); {
	case n == 1 && len(r) == 2:
		id, _ := r[1].(string)
		return SoftDeleted, id, err
	case n == 0:
		return AlreadyDeleted, "", nil
	case n == 2:
		return OtherVersionPending, "", nil
	}
	return 0, "", fmt.Errorf("store: soft delete %s: unexpected reply %v", k, reply)
}

// ErrNotDurable reports a write journaled without the fsync confirmation asked for.
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

func journalEntries(msgs []redis.XMessage) []JournalEntry {
	out := make([]JournalEntry, len(msgs))
	for i, m := range msgs {
		e := JournalEntry{ID: m.ID, Empty: len(m.Values) == 0}
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

// ReadJournal reads up to count entries for consumer. With own set it reads the
// entries already delivered to consumer and not acknowledged (after a restart or a
// failed flush), without blocking; otherwise new entries, blocking up to block when
// there are none (block <= 0: not at all).
func (s *Store) ReadJournal(ctx context.Context, journal, group, consumer string, count int, block time.Duration, own bool) ([]JournalEntry, error) {
	id := ">"
	if own {
		id, block = "0", -1
	}
	if !own && block <= 0 {
		block = -1
	}
	wait := max(block, 0) + max(s.timeout, time.Second)
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: group, Consumer: consumer, Streams: []string{journal, id}, Count: int64(count), Block: block,
	}).Result()
	if err == redis.Nil {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: read journal %s: %w", journal, groupErr(err))
	}
	var out []JournalEntry
	for _, st := range res {
		out = append(out, journalEntries(st.Messages)...)
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
	return journalEntries(msgs), next, nil
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

// ackScript acknowledges entries (ARGV[2..]) of group ARGV[1] and trims the journal
// below the oldest entry any group still needs: its oldest unacknowledged entry, or,
// when it has none, the entry after the last one it was given. Entries past that were
// never delivered, and entries a consumer holds are never trimmed, so no group loses
// an entry it has not acknowledged. (Deleting each acknowledged entry with XDEL costs
// about three times as much as the rest of the acknowledgement.)
var ackScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local acked = 0
for i = 2, #ARGV, 1000 do
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local minms, minseq
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  local ms, seq
  local p = redis.call('XPENDING', KEYS[1], name)
  if p[2] then
    ms, seq = parse(p[2])
  else
    ms, seq = parse(last)
    seq = seq + 1
  end
  if not minms or ms < minms or ms == minms and seq < minseq then
    minms, minseq = ms, seq
  end
end
if minms then
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', minms, minseq))
end
return acked
`)

// AckJournal acknowledges journal entries and trims the journal of the entries no
// consumer group needs any more, in one script: once a flusher is done with an entry
// nothing reads it again.
func (s *Store) AckJournal(ctx context.Context, journal, group string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	args := make([]any, 0, len(ids)+1)
	args = append(args, group)
	for _, id := range ids {
		args = append(args, id)
	}
	if err := ackScript.Run(ctx, s.rdb, []string{journal}, args...).Err(); err != nil {
		return fmt.Errorf("store: ack %d journal entries: %w", len(ids), err)
	}
	return nil
}

// JournalLen returns the number of entries in the journal: those not yet
// acknowledged, and acknowledged ones behind an older unacknowledged entry (trimming
// keeps everything from the oldest unacknowledged entry on). It is 0 once every entry
// was acknowledged.
func (s *Store) JournalLen(ctx context.Context, journal string) (int64, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	n, err := s.rdb.XLen(ctx, journal).Result()
	if err != nil {
		return 0, fmt.Errorf("store: length of %s: %w", journal, err)
	}
	return n, nil
}

// versionsScript returns the version of each pending record in KEYS, "" for none.
var versionsScript = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do out[i] = redis.call('HGET', k, 'v') or '' end
return out
`)

// PendingVersions returns the version of each row's pending record, "" where it has
// none: one script call per hash slot (all rows in one call, by chunks, on a single
// Redis), pipelined.
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

// slotGroups splits the indexes of ks into groups whose keys may go to one script: on
// a Cluster client the rows of one hash slot, else all rows; by chunks of at most 500
// rows.
func (s *Store) slotGroups(ks []keys.Key) [][]int {
	const chunk = 500
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

// clearScript deletes each row's P if it still records the version given for it;
// with ARGV[1] = "1" it also deletes the row's V, F and D (keys.Key.Deps), so readers
// and cached HTTP responses go back to Postgres. KEYS: P, V, F, D of each row;
// ARGV[1 + i]: row i's version. It returns 1 or 0 per row.
var clearScript = redis.NewScript(`
local out = {}
for i = 1, #ARGV - 1 do
  local p = KEYS[4 * i - 3]
  if redis.call('HGET', p, 'v') == ARGV[i + 1] then
    if ARGV[1] == '1' then
      redis.call('DEL', p, KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i])
    else
      redis.call('DEL', p)
    end
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
`)

// Versioned names one write: a row and the version of the write.
type Versioned struct {
	Key     keys.Key
	Version string
}

// ClearPending deletes the pending records of rows whose write was applied, each only
// if it still records that write: a newer write of the row stays pending. With
// invalidate set it also deletes the rows' value and fence keys (for writes given up
// on, so that readers see Postgres again). One script call per hash slot (see
// PendingVersions); cleared[i] reports items[i].
func (s *Store) ClearPending(ctx context.Context, items []Versioned, invalidate bool) ([]bool, error) {
	if len(items) == 0 {
		return nil, nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	flag := "0"
	if invalidate {
		flag = "1"
	}
	ks := make([]keys.Key, len(items))
	for i, it := range items {
		ks[i] = it.Key
	}
	groups := s.slotGroups(ks)
	cmds, err := s.evalShaMany(ctx, clearScript, len(groups), func(g int) ([]string, []any) {
		keys := make([]string, 0, 4*len(groups[g]))
		args := make([]any, 0, 1+len(groups[g]))
		args = append(args, flag)
		for _, i := range groups[g] {
			k := items[i].Key
			keys = append(keys, k.Pending(), k.Value(), k.Fence(), k.Deps())
			args = append(args, items[i].Version)
		}
		return keys, args
	})
	if err != nil {
		return nil, fmt.Errorf("store: clear %d pending records: %w", len(items), err)
	}
	out := make([]bool, len(items))
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

// indexLua defines index(lifetime, prune) for the journal scripts: it adds KEYS[1] to
// the table's index KEYS[5] with the score now + lifetime ms, by the server's clock, and
// prunes up to prune expired entries (see index.go).
const indexLua = `
local function index(lifetime, prune)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[5], 'GT', now + tonumber(lifetime), KEYS[1])
  local old = redis.call('ZRANGE', KEYS[5], '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(prune))
  if #old > 0 then redis.call('ZREM', KEYS[5], unpack(old)) end
end
`
