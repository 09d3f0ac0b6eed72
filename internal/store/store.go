// Package store is the Redis side of the cache: reading cached entries, fenced fills
// (leases) and invalidation, the registry, the table index, gap records and the
// write-back journal. It is the only package that talks to Redis: callers hand it a
// client and ask it questions (such as Sharded), never reach the client through it.
// It names no key itself; every key it reads or writes is named by package keys.
//
// # Fencing
//
// Each row has a value key V and a fence key F in the same Cluster hash slot (see
// package keys). A reader that misses takes a lease: F is set to a token unique to this
// fill, only if no other lease is outstanding. It then reads the database, and stores
// the row only if F still holds its token. Invalidation deletes V and F together, so
// any fill whose lease was taken before the invalidation is refused, and a fill whose
// lease was taken after it reads the database after the write committed. This is the
// lease of Facebook's memcache (NSDI 2013), done with two keys and Lua scripts.
//
// # Pending writes
//
// Under write-back a row may also have a pending record P, in the same hash slot: the
// latest write acknowledged to the application and not yet applied to Postgres (see
// writeback.go). The lease script answers from P when V is gone, as if the row were
// cached, so neither a reader nor a fill ever puts Postgres' older row in front of an
// acknowledged write. Invalidate deletes V and F only; nothing but the flusher deletes
// P.
//
// # Table flushes
//
// Every lease and write-back write also lists its row in the table's index, a sorted
// set in a slot of its own, so that FlushTable deletes every row of a table by walking
// the index rather than the keyspace, and misses no fill under way (see index.go).
package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
)

// Store reads and writes cache entries in Redis. It is safe for concurrent use.
type Store struct {
	rdb     redis.UniversalClient
	timeout time.Duration
	// tokens are this Store's lease tokens: a random instance id and a counter, unique
	// across processes without a round trip.
	instance string
	seq      atomic.Uint64
	gate     *gate // reads' circuit breaker and pool-wait check (breaker.go); nil: none
	// pipe batches concurrent Gets (autopipe.go), for every Store made from the one
	// WithAutoPipeline made; nil: each is sent alone. waits bound their waits.
	pipe  *autoPipe
	waits *deadlines
}

// New returns a Store over rdb. Each Redis operation is bounded by timeout (no bound when
// zero) in addition to the caller's context. instance must be unique to this process
// (random bytes, hex): it makes lease tokens unique.
func New(rdb redis.UniversalClient, timeout time.Duration, instance string) *Store {
	return &Store{rdb: rdb, timeout: timeout, instance: instance}
}

// ReadsReplicas returns why rdb sends reads to replicas, or "" when it reads from
// masters. A replica answers from what it has replicated: a row deleted on its master
// is served until the deletion arrives, however late, so pgcache's reads need masters.
// (A Sentinel client made with ReplicaOnly does not say so in its options: its
// scripts fail with READONLY.)
func ReadsReplicas(rdb redis.UniversalClient) string {
	c, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return ""
	}
	switch o := c.Options(); {
	case o.RouteByLatency:
		return "RouteByLatency"
	case o.RouteRandomly:
		return "RouteRandomly"
	case o.ReadOnly:
		return "ReadOnly"
	}
	return ""
}

// Sharded reports whether the client spreads keys over several servers (a Cluster or
// a Ring client). One script can then touch only keys of one hash slot, and a
// write-back write cannot be one script: its journal and its row are in different
// slots.
func (s *Store) Sharded() bool {
	switch s.rdb.(type) {
	case *redis.ClusterClient, *redis.Ring:
		return true
	}
	return false
}

func (s *Store) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.timeout <= 0 {
		return ctx, func() {}
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= s.timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.timeout)
}

// readCtx is ctx bounded by the store's timeout for a read that passed the gate with
// p. Where it can, it bounds the read by a deadline alone (deadlineCtx), which costs one
// allocation where context.WithTimeout costs five and a timer: go-redis, with
// ContextTimeoutEnabled, takes the connection's read and write deadlines, and a dial's,
// from ctx.Deadline, so a Redis that hangs is cut off at the timeout all the same. What
// a deadline does not bound is a wait that watches ctx.Done: for a pooled connection,
// and go-redis' backoff before it retries a failed dial or write. So a read takes a
// real timeout, as every read did before, whenever it may wait for a connection (the
// store's own reads fill the client's pool, or the pool's size is unknown) or Redis
// has lately failed (the breaker counts a failure in a row, or is not closed).
func (s *Store) readCtx(ctx context.Context, p pass) (context.Context, context.CancelFunc) {
	return s.readCtxIn(ctx, p, nil)
}

// readCtxIn is readCtx, building the deadline's context in dc when it is not nil, so
// that a caller can allocate it together with what else the read needs (see Get).
func (s *Store) readCtxIn(ctx context.Context, p pass, dc *deadlineCtx) (context.Context, context.CancelFunc) {
	g := s.gate
	if s.timeout <= 0 || g == nil || g.pool == 0 || p.queued || p.probe || g.b != nil && !g.b.quiet() {
		return s.ctx(ctx)
	}
	dl := time.Now().Add(s.timeout)
	if pdl, ok := ctx.Deadline(); ok && !pdl.After(dl) {
		return ctx, func() {}
	}
	if dc == nil {
		dc = new(deadlineCtx)
	}
	*dc = deadlineCtx{Context: ctx, deadline: dl}
	return dc, func() {}
}

// deadlineCtx is a context whose deadline is sooner than its parent's, without the
// timer that would close Done at the deadline (see readCtx): Done and Err are the
// parent's.
type deadlineCtx struct {
	context.Context
	deadline time.Time
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

// getRead is what Get allocates besides the key's boxing and go-redis' command and
// reply: the GET's arguments, which go-redis' Get would allocate alone, and the read's
// deadline (readCtxIn), in one allocation where they took two. A hit is mostly this
// GET, so it shows in every hit's cost (integration/observe's hitAllocsBefore).
type getRead struct {
	ctx  deadlineCtx
	args [2]any
}

// Get returns the entry stored at the row's value key.
func (s *Store) Get(ctx context.Context, k keys.Key) ([]byte, bool, error) {
	gp, err := s.gate.enter()
	if err != nil {
		return nil, false, err
	}
	g := &getRead{args: [2]any{"get", k.Value()}}
	rctx, cancel := s.readCtxIn(ctx, gp, &g.ctx)
	cmd := redis.NewStringCmd(rctx, g.args[:]...)
	var b []byte
	if ap := s.batched(gp); ap != nil {
		gp.queued = false // it waits for no pooled connection
		testhooks.Batched(ctx, k.Value())
		if err = s.pipe.wait(ctx, ap, cmd, s.waits); err == nil {
			b, err = cmd.Bytes()
		}
	} else {
		_ = s.rdb.Process(rctx, cmd) // the error is cmd's too
		b, err = cmd.Bytes()
	}
	cancel()
	err = s.gate.leave(ctx, gp, err)
	if err == redis.Nil {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: get %s: %w", k, err)
	}
	return b, true, nil
}

// batched returns the pipeliner a Get that passed the gate with p is sent on, or nil
// to send it alone (see autopipe.go): it is the only read under way, it probes the
// breaker, or the breaker has lately seen a failure.
func (s *Store) batched(p pass) *redis.AutoPipeliner {
	if s.pipe == nil || !p.concurrent || p.probe || s.gate.b != nil && !s.gate.b.quiet() {
		return nil
	}
	return s.pipe.pipeliner()
}

// WithAutoPipeline returns a Store sharing s's client and gate whose concurrent Gets
// share round trips (see autopipe.go) when its client is a single server's and s has
// a gate (WithBreaker), which counts the reads under way, as do
// those of the Stores made from it with WithTimeout; Close turns that off. unbounded
// is for a test's control only: batched Gets then wait without the Store's timeout.
func (s *Store) WithAutoPipeline(unbounded bool) *Store {
	return &Store{rdb: s.rdb, timeout: s.timeout, instance: s.instance + ".p", gate: s.gate, pipe: newAutoPipe(s.rdb),
		waits: &deadlines{timeout: s.timeout, unbounded: unbounded}}
}

// Close turns off what WithAutoPipeline turned on, for this Store and those sharing
// its client's pipeliner: their Gets are then sent alone. The client and its
// pipeliner stay open.
func (s *Store) Close() {
	if s.pipe != nil {
		s.pipe.close()
	}
}

// GetMany returns the entries of ks in one round trip: one MGET on a single server,
// a pipeline of GETs on a Cluster or Ring client (which sends one pipeline per node),
// since the keys of different rows are in different slots. A nil element is a miss.
func (s *Store) GetMany(ctx context.Context, ks []keys.Key) (_ [][]byte, err error) {
	gp, err := s.gate.enter()
	if err != nil {
		return nil, err
	}
	defer func(parent context.Context) { err = s.gate.leave(parent, gp, err) }(ctx)
	ctx, cancel := s.readCtx(ctx, gp)
	defer cancel()
	if !s.Sharded() {
		return s.mget(ctx, ks)
	}
	cmds := make([]*redis.StringCmd, len(ks))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range ks {
			cmds[i] = p.Get(ctx, k.Value())
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		return nil, fmt.Errorf("store: get %d keys: %w", len(ks), err)
	}
	out := make([][]byte, len(ks))
	for i, c := range cmds {
		if b, err := c.Bytes(); err == nil {
			out[i] = b
		}
	}
	return out, nil
}

// mget is GetMany on a single server.
func (s *Store) mget(ctx context.Context, ks []keys.Key) ([][]byte, error) {
	names := make([]string, len(ks))
	for i, k := range ks {
		names[i] = k.Value()
	}
	vals, err := s.rdb.MGet(ctx, names...).Result()
	if err != nil {
		return nil, fmt.Errorf("store: get %d keys: %w", len(ks), err)
	}
	out := make([][]byte, len(ks))
	for i, v := range vals {
		if str, ok := v.(string); ok {
			out[i] = []byte(str)
		}
	}
	return out, nil
}

// LeaseState says what Lease found.
type LeaseState uint8

const (
	// Found: the row is cached, or has a pending write-back write; Lease.Value holds
	// the entry.
	Found LeaseState = iota + 1
	// Acquired: the caller holds the lease; Lease.Token must be passed to Fill.
	Acquired
	// Held: another filler holds the lease for Lease.Wait more.
	Held
)

// Lease is the outcome of taking a row's lease.
type Lease struct {
	State LeaseState
	Value []byte
	Token string
	Wait  time.Duration
}

// lease returns V if present, else the entry of a pending write-back record P (the
// latest acknowledged write, not yet in Postgres, whose V the invalidator may have
// deleted: filling from the database would put an older row over it), else sets F to
// the token unless another lease is live.
//
// ARGV[3] is the model's entry prefix (Model.Entry), "" for models whose key holds
// their schema version. With a prefix, V counts only when it starts with it: a V
// written by another schema version of the model (another build, during a deploy)
// is replaced by this fill, unless P holds a pending write, which is returned
// whatever its version.
var leaseScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and (ARGV[3] == '' or string.sub(v, 1, #ARGV[3]) == ARGV[3]) then return {1, v} end
local p = redis.call('HGET', KEYS[3], 'e')
if p then return {1, p} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {3, redis.call('PTTL', KEYS[2])}
`)

// fill stores the entry only while F still holds the caller's token.
var fillScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
`)

// release gives a lease back, so that waiters stop waiting for a fill that will not come.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

func (s *Store) token() string {
	return s.instance + ":" + strconv.FormatUint(s.seq.Add(1), 36)
}

// TakeLease takes the row's lease for d, unless the row is cached, has a pending
// write-back write, or another lease is live. In the same round trip, before the lease,
// it records m in the registry (see registry.go): so whenever a lease is live, the server
// holding it lists the row's version, even if Redis restarted empty since the model's
// first fill. It also adds the row to m's table index, for m's lifetime (see index.go), so
// that a table flush that begins after TakeLease returned visits the row. A lease is
// returned only when both were acknowledged.
func (s *Store) TakeLease(ctx context.Context, m Model, k keys.Key, d time.Duration) (Lease, error) {
	ls, err := s.TakeLeases(ctx, m, []keys.Key{k}, d)
	if err != nil {
		return Lease{}, err
	}
	return ls[0], nil
}

// TakeLeases is TakeLease for many rows in one round trip. Scripts in pipelines are
// sent with EVAL, not EVALSHA: a pipeline cannot fall back when the server does not
// know the script yet.
func (s *Store) TakeLeases(ctx context.Context, m Model, ks []keys.Key, d time.Duration) (_ []Lease, err error) {
	gp, err := s.gate.enter()
	if err != nil {
		return nil, err
	}
	defer func(parent context.Context) { err = s.gate.leave(parent, gp, err) }(ctx)
	ctx, cancel := s.readCtx(ctx, gp)
	defer cancel()
	toks := make([]string, len(ks))
	for i := range toks {
		toks[i] = s.token()
	}
	if len(ks) == 0 {
		return nil, nil
	}
	if m.index == "" {
		return nil, fmt.Errorf("store: lease %d keys of %s: the Model has no table index; build it with NewModel", len(ks), m.space.Table())
	}
	var (
		reg announcement
		idx *redis.Cmd
	)
	cmds := make([]*redis.Cmd, len(ks))
	err = s.pipelined(ctx, func(p redis.Pipeliner) {
		reg = s.announce(ctx, p, m)
		idx = s.index(ctx, p, m, ks)
		for i, k := range ks {
			cmds[i] = leaseScript.EvalSha(ctx, p, []string{k.Value(), k.Fence(), k.Pending()}, toks[i], d.Milliseconds(), m.Entry)
		}
	}, leaseScript)
	if err == nil {
		err = reg.Err()
	}
	if err == nil {
		err = idx.Err()
	}
	out := make([]Lease, len(ks))
	for i, c := range cmds {
		if err != nil {
			break
		}
		var res []any
		if res, err = c.Slice(); err == nil {
			out[i], err = parseLease(res, toks[i])
		}
	}
	if err != nil {
		// Leases taken without their registry or index entry must not be filled: give
		// them back.
		for i, c := range cmds {
			if res, cerr := c.Slice(); cerr == nil && len(res) > 0 && res[0] == int64(2) {
				_ = s.Release(context.WithoutCancel(ctx), ks[i], toks[i])
			}
		}
		return nil, fmt.Errorf("store: lease %d keys: %w", len(ks), err)
	}
	return out, nil
}

// pipelined sends the commands fill adds in one pipeline. Scripts in it must be sent
// with EVALSHA; when the server does not know one (it restarted, or never saw it), no
// command of the pipeline ran a script, so the scripts are loaded and the pipeline sent
// again: fill must add only commands that may run twice.
func (s *Store) pipelined(ctx context.Context, fill func(p redis.Pipeliner), scripts ...*redis.Script) error {
	for loaded := false; ; loaded = true {
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			fill(p)
			return nil
		})
		if err == nil || loaded || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			return err
		}
		for _, sc := range scripts {
			if err := sc.Load(ctx, s.rdb).Err(); err != nil {
				return err
			}
		}
	}
}

func parseLease(res []any, tok string) (Lease, error) {
	if len(res) == 0 {
		return Lease{}, errors.New("store: lease: empty reply")
	}
	state, _ := res[0].(int64)
	switch {
	case state == 1 && len(res) == 2:
		v, _ := res[1].(string)
		return Lease{State: Found, Value: []byte(v)}, nil
	case state == 2:
		return Lease{State: Acquired, Token: tok}, nil
	case state == 3 && len(res) == 2:
		ms, _ := res[1].(int64)
		return Lease{State: Held, Wait: time.Duration(max(ms, 0)) * time.Millisecond}, nil
	}
	return Lease{}, fmt.Errorf("store: lease: unexpected reply %v", res)
}

// Fill stores entry at the row's value key for ttl if the caller's lease is still the
// row's lease, that is, if no invalidation happened since it was taken. It reports
// whether the entry was stored.
func (s *Store) Fill(ctx context.Context, k keys.Key, token string, entry []byte, ttl time.Duration) (bool, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	n, err := fillScript.Run(ctx, s.rdb, []string{k.Value(), k.Fence()}, token, entry, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("store: fill %s: %w", k, err)
	}
	return n == 1, nil
}

// FillUnfenced stores entry at the row's value key for ttl with a plain SET, without
// a lease, as a cache without fencing does. It is for tests that show what fencing
// prevents; a fill that may race an invalidation must use TakeLease and Fill.
func (s *Store) FillUnfenced(ctx context.Context, k keys.Key, entry []byte, ttl time.Duration) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := s.rdb.Set(ctx, k.Value(), entry, ttl).Err(); err != nil {
		return fmt.Errorf("store: set %s: %w", k, err)
	}
	return nil
}

// FillItem is one row of FillMany.
type FillItem struct {
	Key   keys.Key
	Token string
	Entry []byte
	TTL   time.Duration
}

// FillMany is Fill for many rows in one round trip. stored[i] reports items[i].
func (s *Store) FillMany(ctx context.Context, items []FillItem) ([]bool, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	cmds := make([]*redis.Cmd, len(items))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, it := range items {
			cmds[i] = fillScript.Eval(ctx, p, []string{it.Key.Value(), it.Key.Fence()}, it.Token, it.Entry, it.TTL.Milliseconds())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: fill %d keys: %w", len(items), err)
	}
	stored := make([]bool, len(items))
	for i, c := range cmds {
		n, _ := c.Int()
		stored[i] = n == 1
	}
	return stored, nil
}

// Release gives back a lease whose fill will not happen (the load failed).
func (s *Store) Release(ctx context.Context, k keys.Key, token string) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := releaseScript.Run(ctx, s.rdb, []string{k.Fence()}, token).Err(); err != nil {
		return fmt.Errorf("store: release %s: %w", k, err)
	}
	return nil
}

// Invalidate deletes the value and fence keys of the rows, which also voids every
// outstanding lease on them, and their dependency epochs (keys.Key.Deps), which voids
// every cached response that read them: on one server in one DEL; on a Cluster or Ring,
// where only the keys of one row share a hash slot, in a DEL per row, pipelined.
func (s *Store) Invalidate(ctx context.Context, ks ...keys.Key) error {
	if len(ks) == 0 {
		return nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var err error
	if s.Sharded() && len(ks) > 1 {
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			s.queueInvalidate(ctx, p, ks)
			return nil
		})
	} else {
		cmd := invalidateCmd(ctx, ks)
		_ = s.rdb.Process(ctx, cmd)
		err = cmd.Err()
	}
	if err != nil {
		return fmt.Errorf("store: invalidate %d rows: %w", len(ks), err)
	}
	return nil
}

// InvalidateAnnounced is Invalidate and Announced in one round trip: the registries
// of prefix are read in the pipeline that deletes the rows' keys (before the deletes,
// as Redis runs a pipeline's commands in order). With no keys, it is Announced.
func (s *Store) InvalidateAnnounced(ctx context.Context, prefix string, ks []keys.Key) (Announcements, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	pre := keys.Prefix(prefix)
	var reg, lookups *redis.StringSliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		reg, lookups = p.HKeys(ctx, pre.Registry()), p.HKeys(ctx, pre.Lookups())
		s.queueInvalidate(ctx, p, ks)
		return nil
	})
	if err != nil {
		return Announcements{}, fmt.Errorf("store: read registries %s and %s, invalidate %d rows: %w", pre.Registry(), pre.Lookups(), len(ks), err)
	}
	return parseAnnounced(reg, lookups), nil
}

// queueInvalidate queues the deletes of Invalidate on p: on one server, one DEL of
// every key (the server parses one command, not one per row); on a Cluster or Ring, a
// DEL per row, since a row's keys share a slot and rows do not.
func (s *Store) queueInvalidate(ctx context.Context, p redis.Pipeliner, ks []keys.Key) {
	switch {
	case len(ks) == 0:
	case s.Sharded():
		for _, k := range ks {
			p.Del(ctx, k.Value(), k.Fence(), k.Deps())
		}
	default:
		_ = p.Process(ctx, invalidateCmd(ctx, ks))
	}
}

// invalidateCmd is one DEL of the value, fence and dependency keys of every row. The
// arguments point into the names, which go-redis writes as it would the strings: a
// string in an interface would cost an allocation per key.
func invalidateCmd(ctx context.Context, ks []keys.Key) *redis.IntCmd {
	names := keys.Invalidated(ks...)
	args := make([]any, 1+len(names))
	args[0] = "del"
	for i := range names {
		args[1+i] = &names[i]
	}
	return redis.NewIntCmd(ctx, args...)
}

// deleteIf deletes V only while it still holds the given entry.
var deleteIfScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// DeleteEntry deletes the row's value key if it still holds entry (one that could not be
// decoded), leaving a newer entry and the lease alone.
func (s *Store) DeleteEntry(ctx context.Context, k keys.Key, entry []byte) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := deleteIfScript.Run(ctx, s.rdb, []string{k.Value()}, entry).Err(); err != nil {
		return fmt.Errorf("store: delete %s: %w", k, err)
	}
	return nil
}

// WithTimeout returns a Store that shares s's client and tokens with another timeout.
func (s *Store) WithTimeout(d time.Duration) *Store {
	st := &Store{rdb: s.rdb, timeout: d, instance: s.instance + "." + strconv.FormatInt(int64(d), 36), gate: s.gate, pipe: s.pipe}
	if s.waits != nil {
		st.waits = &deadlines{timeout: d, unbounded: s.waits.unbounded}
	}
	return st
}
