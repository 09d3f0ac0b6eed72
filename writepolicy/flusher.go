package writepolicy

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
)

// FlusherOptions configure a Flusher. The zero value gives the defaults.
type FlusherOptions struct {
	// Prefix is the key prefix of the applications whose writes this flusher applies;
	// it must equal their readthrough.Options.Prefix. Default "pgc".
	Prefix string
	// Group is the journal's consumer group. Flushers of one group share the work:
	// each entry goes to one of them. Default "pgcache-flushers".
	Group string
	// Consumer names this flusher in the group. A flusher that restarts under the same
	// name takes up at once the entries it held when it stopped; under a new name they
	// are claimed after ClaimAfter. Default: host name, process id and random bytes.
	Consumer string
	// BatchSize is the most journal entries applied in one Postgres transaction.
	// Default 1000.
	BatchSize int
	// FlushInterval is the longest an entry waits for its batch to fill: a batch is
	// applied when it holds BatchSize entries or its first entry is this old. Default
	// 100ms. It is, with the transaction's own time, how far Postgres lags behind
	// acknowledged writes.
	FlushInterval time.Duration
	// MaxAttempts is how many times a write that fails because of its data (a
	// constraint violation, a bad value: see the package doc) is tried on its own,
	// after its batch failed, before it goes to the dead-letter stream. Default 3.
	// Other failures (Postgres or Redis down, deadlocks, missing tables or privileges)
	// are retried without limit.
	MaxAttempts int
	// RetryBackoff is the first wait after a failure; waits double up to MaxBackoff,
	// with jitter. Defaults 50ms and 5s.
	RetryBackoff, MaxBackoff time.Duration
	// ClaimAfter is how long an entry delivered to a flusher may stay unacknowledged
	// before another flusher claims it (the first one is taken for dead). It must be
	// well above the time a batch takes. Default 30s. A consumer that holds nothing and
	// has been idle for ten times ClaimAfter is removed from the group.
	ClaimAfter time.Duration
	// ApplyTimeout bounds one Postgres transaction. Default 30s.
	ApplyTimeout time.Duration
	// ShutdownTimeout bounds the flush of the entries held when Run's context ends.
	// Default 10s.
	ShutdownTimeout time.Duration
	// RedisTimeout bounds each Redis operation. Default 1s.
	RedisTimeout time.Duration
	// DeadLetterKey is the stream that receives writes given up on. Default
	// "<Prefix>:deadletter".
	DeadLetterKey string
	// OnDeadLetter, if set, is called (from Run's goroutine) for each write moved to
	// the dead-letter stream, for alerting.
	OnDeadLetter func(DeadLetter)
	// Logger receives warnings (failed batches, retries, dead letters), at most one a
	// second for repeated failures. Default: none.
	Logger *slog.Logger
}

func (o FlusherOptions) withDefaults() (FlusherOptions, error) {
	if o.Prefix == "" {
		o.Prefix = "pgc"
	}
	if o.Group == "" {
		o.Group = "pgcache-flushers"
	}
	if o.Consumer == "" {
		host, _ := os.Hostname()
		var b [4]byte
		_, _ = crand.Read(b[:])
		o.Consumer = fmt.Sprintf("%s-%d-%s", cmp.Or(host, "flusher"), os.Getpid(), hex.EncodeToString(b[:]))
	}
	o.BatchSize = cmp.Or(o.BatchSize, 1000)
	o.FlushInterval = cmp.Or(o.FlushInterval, 100*time.Millisecond)
	o.MaxAttempts = cmp.Or(o.MaxAttempts, 3)
	o.RetryBackoff = cmp.Or(o.RetryBackoff, 50*time.Millisecond)
	o.MaxBackoff = cmp.Or(o.MaxBackoff, 5*time.Second)
	o.ClaimAfter = cmp.Or(o.ClaimAfter, 30*time.Second)
	o.ApplyTimeout = cmp.Or(o.ApplyTimeout, 30*time.Second)
	o.ShutdownTimeout = cmp.Or(o.ShutdownTimeout, 10*time.Second)
	o.RedisTimeout = cmp.Or(o.RedisTimeout, time.Second)
	if o.DeadLetterKey == "" {
		o.DeadLetterKey = keys.Prefix(o.Prefix).DeadLetter()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	switch {
	case o.BatchSize < 1:
		return o, fmt.Errorf("%w: BatchSize %d must be positive", ErrConfig, o.BatchSize)
	case o.FlushInterval < time.Millisecond:
		return o, fmt.Errorf("%w: FlushInterval %v must be at least 1ms", ErrConfig, o.FlushInterval)
	case o.MaxAttempts < 1:
		return o, fmt.Errorf("%w: MaxAttempts %d must be positive", ErrConfig, o.MaxAttempts)
	case o.RetryBackoff <= 0 || o.MaxBackoff < o.RetryBackoff:
		return o, fmt.Errorf("%w: RetryBackoff %v must be positive and MaxBackoff %v at least as long", ErrConfig, o.RetryBackoff, o.MaxBackoff)
	case o.ClaimAfter < time.Millisecond:
		return o, fmt.Errorf("%w: ClaimAfter %v must be at least 1ms", ErrConfig, o.ClaimAfter)
	case o.ApplyTimeout <= 0 || o.ShutdownTimeout <= 0 || o.RedisTimeout <= 0:
		return o, fmt.Errorf("%w: timeouts must be positive", ErrConfig)
	}
	return o, nil
}

// Flusher applies write-back writes from the journal to Postgres. Create it with
// NewFlusher and call Run; run one or more per prefix, in the application or in the
// worker. Its methods are safe for concurrent use; Run is called once.
type Flusher struct {
	db      *gorm.DB
	store   *store.Store
	opts    FlusherOptions
	journal string
	log     *slog.Logger
	stats   counters
	lastLog atomic.Int64
	hooks   *hooks
	dec     decoder // used by Run's goroutine only
}

// hooks let tests stop a flush where crashes and races matter. nil in production.
type hooks struct {
	afterRead    func(held int) // entries were read or claimed; held is the batch so far
	beforeApply  func()         // the versions were checked; the transaction begins next
	beforeCommit func()         // a transaction's statements ran and its versions matched
	afterCommit  func()         // a transaction committed; pending records not yet cleared
	afterClear   func()         // pending records cleared; entries not yet acknowledged
}

// NewFlusher returns a flusher applying to Postgres through db the writes journaled in
// rdb under opts.Prefix.
func NewFlusher(db *gorm.DB, rdb redis.UniversalClient, opts FlusherOptions) (*Flusher, error) {
	if db == nil || rdb == nil {
		return nil, fmt.Errorf("%w: NewFlusher needs a *gorm.DB and a Redis client", ErrConfig)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if _, err := keys.NewSpace(opts.Prefix, "t", "v"); err != nil {
		return nil, fmt.Errorf("%w: Prefix: %v", ErrConfig, err)
	}
	return &Flusher{
		db:      db,
		store:   store.New(rdb, opts.RedisTimeout, "flusher."+opts.Consumer),
		opts:    opts,
		journal: keys.Prefix(opts.Prefix).Journal(),
		log:     opts.Logger.With(slog.String("consumer", opts.Consumer)),
	}, nil
}

// Log attribute keys.
const (
	attrError = "error"
	attrRows  = "rows"
	attrKey   = "key"
)

// Run reads the journal and applies its writes until ctx ends, then applies the
// entries it holds (within ShutdownTimeout) and returns nil; it returns an error only
// when that last flush fails (its entries stay pending, for this consumer or another
// flusher to claim). Failures while running are logged, counted and retried with
// capped, jittered backoff.
func (f *Flusher) Run(ctx context.Context) error {
	bo := f.backoff()
	needGroup := true
	var (
		held       []store.JournalEntry
		since      time.Time // when the first held entry was read
		own        = true    // read this consumer's unacknowledged entries first
		nextClaim  time.Time
		claimStart = "0-0"
	)
	claimEvery := max(f.opts.ClaimAfter/2, time.Millisecond)
	for {
		if ctx.Err() != nil {
			return f.stop(ctx, held)
		}
		if needGroup {
			if err := f.store.CreateGroup(ctx, f.journal, f.opts.Group); err != nil {
				f.failed("create consumer group", err)
				_ = bo.wait(ctx)
				continue
			}
			needGroup = false
		}

		room := f.opts.BatchSize - len(held)
		var got []store.JournalEntry
		var err error
		now := time.Now()
		switch {
		case room > 0 && !now.Before(nextClaim):
			got, claimStart, err = f.store.ClaimJournal(ctx, f.journal, f.opts.Group, f.opts.Consumer, f.opts.ClaimAfter, claimStart, room)
			if err == nil {
				f.stats.claimed.Add(uint64(len(got)))
				if claimStart == "0-0" || claimStart == "" {
					claimStart, nextClaim = "0-0", now.Add(claimEvery)
					f.prune(ctx)
				}
			}
		case room > 0 && own:
			got, err = f.store.ReadJournal(ctx, f.journal, f.opts.Group, f.opts.Consumer, room, 0, true)
			if err == nil && len(got) < room {
				own = false
			}
		case room > 0:
			block := f.opts.FlushInterval
			if len(held) > 0 {
				block = time.Until(since.Add(f.opts.FlushInterval))
			}
			block = max(min(block, time.Until(nextClaim)), time.Millisecond)
			got, err = f.store.ReadJournal(ctx, f.journal, f.opts.Group, f.opts.Consumer, room, block, false)
		}
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			if strings.Contains(err.Error(), "NOGROUP") {
				needGroup = true // the journal was deleted
			}
			f.failed("read journal", err)
			_ = bo.wait(ctx)
			continue
		}
		if len(got) > 0 {
			f.stats.read.Add(uint64(len(got)))
			if len(held) == 0 {
				since = time.Now()
			}
			held = append(held, got...)
			if f.hooks != nil && f.hooks.afterRead != nil {
				f.hooks.afterRead(len(held))
			}
		}
		if len(held) == 0 || len(held) < f.opts.BatchSize && time.Since(since) < f.opts.FlushInterval {
			continue
		}
		err = f.flush(ctx, held)
		held = nil
		if err != nil {
			own = true // the entries are still ours: read them again
			f.failed("flush", err)
			_ = bo.wait(ctx)
			continue
		}
		bo.reset()
	}
}

// prune forgets consumers that stopped: those idle for ten times ClaimAfter, whose
// entries were claimed since. Failures are only logged: the next sweep tries again.
func (f *Flusher) prune(ctx context.Context) {
	n, err := f.store.PruneConsumers(ctx, f.journal, f.opts.Group, f.opts.Consumer, 10*f.opts.ClaimAfter)
	if err != nil {
		f.failed("prune consumers", err)
		return
	}
	if n > 0 {
		f.log.Info("writepolicy: removed stopped flushers from the consumer group", slog.Int("consumers", n))
	}
}

// stop applies the entries held when Run's context ended.
func (f *Flusher) stop(ctx context.Context, held []store.JournalEntry) error {
	if len(held) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.opts.ShutdownTimeout)
	defer cancel()
	if err := f.flush(ctx, held); err != nil {
		return fmt.Errorf("writepolicy: flush %d entries on stop (they stay pending for another flusher): %w", len(held), err)
	}
	return nil
}

// write is the latest journaled write of one row in a batch.
type write struct {
	id  string // journal entry id: the write's version
	key keys.Key
	row string // the row's table and key values, the same under every schema version
	raw string // the change as journaled
	// rawBase is the write a soft delete carries (see store.SoftDelete), as journaled.
	rawBase string
	change  *Change // nil when it could not be decoded
	reason  string  // why it goes to the dead-letter stream
	tries   int
}

// flush applies one batch of journal entries:
//
//  1. decode, and keep per row only the entry with the highest id (coalescing), rows
//     told apart by table and key values, whatever the schema version of their key;
//  2. keep the rows whose pending record still holds that id: any other entry was
//     superseded by a newer write of the row, which is journaled after it, or was
//     applied and cleared before (a replay after a crash);
//  3. apply them in one transaction and, holding the rows' locks, check the versions
//     again (see applyTx); after a failure caused by a row's data, apply row by row
//     and dead-letter the rows that keep failing;
//  4. delete the pending records of the applied rows that still hold their version,
//     and of the older writes of step 1 (under another schema version's key);
//  5. acknowledge and delete every entry of the batch.
//
// A crash between any two steps leaves the entries pending; whoever takes them up
// repeats the steps, and step 2 skips what step 4 already did. Applying a row twice
// writes the same values twice.
//
// Operations are bounded by their own timeouts, not by ctx, so that a batch under way
// completes when Run is stopped; ctx ends the waits between retries.
func (f *Flusher) flush(ctx context.Context, batch []store.JournalEntry) error {
	op := context.WithoutCancel(ctx)
	ids := make([]string, 0, len(batch))
	seen := make(map[string]bool, len(batch))
	// The latest write of each row, by its identity: during a rolling deploy two schema
	// versions may write the same row under different keys.
	latest := make(map[string]*write)
	// Older writes of rows that have a later one in the batch (see step 4).
	var older []*write
	var dead []*write
	for _, e := range batch {
		if seen[e.ID] {
			continue // claimed again while held
		}
		seen[e.ID] = true
		ids = append(ids, e.ID)
		if e.Empty {
			continue // deleted from the stream: nothing to apply
		}
		w := &write{id: e.ID, raw: e.Change, rawBase: e.Base}
		k, row, err := rowKey(e.Key)
		if err != nil {
			w.reason = err.Error()
			dead = append(dead, w)
			continue
		}
		w.key, w.row = k, row
		if c, err := f.dec.decode([]byte(e.Change)); err != nil {
			w.reason = err.Error()
		} else if c.Base, err = f.base(c, e.Base); err != nil {
			w.reason = err.Error()
		} else {
			w.change = &c
		}
		if prev, ok := latest[row]; ok {
			f.stats.superseded.Add(1)
			if idLess(w.id, prev.id) {
				older = append(older, w)
				continue
			}
			older = append(older, prev)
		}
		latest[row] = w
	}

	rows := make([]*write, 0, len(latest))
	for _, w := range latest {
		rows = append(rows, w)
	}
	// An older write under the latest's key needs nothing: the latest replaced its
	// pending record. One under another schema version's key left a record of its own.
	older = slices.DeleteFunc(older, func(w *write) bool { return w.key == latest[w.row].key })
	// A fixed order of rows makes concurrent flushers lock them in the same order.
	slices.SortFunc(rows, func(a, b *write) int { return strings.Compare(a.row, b.row) })
	live, err := f.current(op, rows)
	if err != nil {
		return err
	}
	var todo []*write
	for _, w := range live {
		if w.change == nil {
			dead = append(dead, w)
		} else {
			todo = append(todo, w)
		}
	}
	if f.hooks != nil && f.hooks.beforeApply != nil {
		f.hooks.beforeApply()
	}
	applied, failed, err := f.apply(ctx, todo)
	if err != nil {
		return err
	}
	dead = append(dead, failed...)
	if len(applied) > 0 {
		f.stats.batches.Add(1)
		f.stats.applied.Add(uint64(len(applied)))
		if f.hooks != nil && f.hooks.afterCommit != nil {
			f.hooks.afterCommit()
		}
	}
	items := make([]store.Versioned, 0, len(applied)+len(older))
	for _, w := range slices.Concat(applied, older) {
		items = append(items, store.Versioned{Key: w.key, Version: w.id})
	}
	if len(items) > 0 {
		if _, err := f.store.ClearPending(op, items, false); err != nil {
			return fmt.Errorf("writepolicy: clear pending records: %w", err)
		}
	}
	if err := f.deadLetter(op, dead); err != nil {
		return err
	}
	if f.hooks != nil && f.hooks.afterClear != nil {
		f.hooks.afterClear()
	}
	if err := f.store.AckJournal(op, f.journal, f.opts.Group, ids); err != nil {
		return fmt.Errorf("writepolicy: acknowledge: %w", err)
	}
	return nil
}

// base decodes the change a soft delete carries (see store.SoftDelete): an upsert of
// the same row, or nothing.
func (f *Flusher) base(c Change, raw string) (*Change, error) {
	if raw == "" {
		return nil, nil
	}
	b, err := f.dec.decode([]byte(raw))
	if err != nil {
		return nil, fmt.Errorf("base write: %w", err)
	}
	if c.SoftDelete == "" || b.Delete || b.Schema != c.Schema || b.Table != c.Table || !slices.Equal(b.Key, c.Key) {
		return nil, fmt.Errorf("%w: %s.%s: a base write goes only with a soft delete, and must be an upsert of the same table", ErrBadChange, c.Schema, c.Table)
	}
	return &b, nil
}

// current returns the rows whose pending record still holds their version.
func (f *Flusher) current(ctx context.Context, rows []*write) ([]*write, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	ks := make([]keys.Key, len(rows))
	for i, w := range rows {
		ks[i] = w.key
	}
	vers, err := f.store.PendingVersions(ctx, ks)
	if err != nil {
		return nil, fmt.Errorf("writepolicy: check versions: %w", err)
	}
	live := rows[:0:0]
	for i, w := range rows {
		if vers[i] == w.id {
			live = append(live, w)
		} else {
			f.stats.superseded.Add(1)
		}
	}
	return live, nil
}

// apply applies the rows in one transaction, retrying failures that are not the data's
// fault. When the data is at fault it applies the rows one by one, so one bad row
// does not hold up the others, and returns the rows that failed MaxAttempts times.
func (f *Flusher) apply(ctx context.Context, rows []*write) (applied, dead []*write, err error) {
	if len(rows) == 0 {
		return nil, nil, nil
	}
	bo := f.backoff()
	for {
		ok, err := f.applyTx(ctx, rows)
		if err == nil {
			return ok, nil, nil
		}
		if permanent(err) {
			if len(rows) > 1 {
				f.failed("apply batch; applying its rows one by one", err, slog.Int(attrRows, len(rows)))
			}
			break
		}
		f.failed("apply batch", err, slog.Int(attrRows, len(rows)))
		f.stats.retries.Add(1)
		if err := bo.wait(ctx); err != nil {
			return nil, nil, err
		}
	}
	for _, w := range rows {
		bo := f.backoff()
		for {
			ok, err := f.applyTx(ctx, []*write{w})
			if err == nil {
				applied = append(applied, ok...)
				break
			}
			if permanent(err) {
				w.tries++
				if w.tries >= f.opts.MaxAttempts {
					w.reason = err.Error()
					dead = append(dead, w)
					break
				}
			}
			f.failed("apply row", err, slog.String(attrKey, w.key.Value()))
			f.stats.retries.Add(1)
			if err := bo.wait(ctx); err != nil {
				return nil, nil, err
			}
		}
	}
	return applied, dead, nil
}

var errSuperseded = errors.New("writepolicy: rows superseded during the transaction")

// applyTx writes the rows in one transaction and returns those it committed.
//
// The versions were checked before, but a newer write of a row may be journaled and
// applied by another flusher meanwhile; committing this older one after it would put
// the older row in Postgres for good. So the transaction first takes an advisory lock
// per row (see lockRows), and the versions are checked again after the statements
// ran, holding the locks. A row whose version still matched then cannot have a newer
// write applied before this commit: the newer write's flusher needs the lock, which
// it gets after this commit, and it checks its own version only after it got it. Rows
// that no longer match are dropped and the transaction is run again without them.
//
// The locks are advisory, not only the rows' own, because a DELETE does not wait for
// an INSERT of the same key that has not committed: it deletes nothing and commits,
// and the insert's commit then brings back a row whose deletion was acknowledged.
func (f *Flusher) applyTx(ctx context.Context, rows []*write) ([]*write, error) {
	for len(rows) > 0 {
		stale := make(map[*write]bool)
		op, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.opts.ApplyTimeout)
		err := f.db.WithContext(op).Transaction(func(tx *gorm.DB) error {
			if err := lockRows(op, tx, rows); err != nil {
				return err
			}
			changes := make([]*Change, len(rows))
			for i, w := range rows {
				changes[i] = w.change
			}
			if err := applyChanges(op, tx, changes); err != nil {
				return err
			}
			live, err := f.current(op, rows)
			if err != nil {
				return err
			}
			if len(live) == len(rows) {
				if f.hooks != nil && f.hooks.beforeCommit != nil {
					f.hooks.beforeCommit()
				}
				return nil
			}
			for _, w := range rows {
				stale[w] = true
			}
			for _, w := range live {
				delete(stale, w)
			}
			return errSuperseded
		})
		cancel()
		if errors.Is(err, errSuperseded) {
			rows = slices.DeleteFunc(slices.Clone(rows), func(w *write) bool { return stale[w] })
			continue
		}
		if err != nil {
			return nil, err
		}
		return rows, nil
	}
	return nil, nil
}

// lockRows takes a transaction-scoped advisory lock on each row, named by the 64-bit
// FNV-1a hash of its identity, in the rows' order (sorted, so concurrent flushers
// lock in the same order; a deadlock all the same is retried). Rows whose hashes
// collide share a lock, which costs only waiting.
func lockRows(ctx context.Context, tx *gorm.DB, rows []*write) error {
	ids := make([]int64, len(rows))
	for i, w := range rows {
		h := fnv.New64a()
		h.Write([]byte(w.row))
		ids[i] = int64(h.Sum64())
	}
	_, err := tx.Statement.ConnPool.ExecContext(ctx,
		`SELECT pg_advisory_xact_lock(id) FROM unnest($1::bigint[]) WITH ORDINALITY AS t(id, n) ORDER BY n`, ids)
	if err != nil {
		return fmt.Errorf("writepolicy: lock %d rows: %w", len(rows), err)
	}
	return nil
}

// rowKey returns the key of the row whose value key is s, and the row's identity:
// its table and key values, without the schema version.
func rowKey(s string) (keys.Key, string, error) {
	sp, pk, err := keys.ParseKey(s)
	if err != nil {
		return keys.Key{}, "", fmt.Errorf("%w: row key: %v", ErrBadChange, err)
	}
	k := sp.Key(pk...)
	if k.Value() != s {
		return keys.Key{}, "", fmt.Errorf("%w: %q is not a row's value key", ErrBadChange, s)
	}
	return k, sp.Table() + "\x00" + strings.Join(pk, "\x00"), nil
}

// idLess orders stream ids ("<ms>-<seq>") numerically.
func idLess(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	return am < bm || am == bm && as < bs
}

func splitID(id string) (uint64, uint64) {
	ms, seq, _ := strings.Cut(id, "-")
	m, _ := strconv.ParseUint(ms, 10, 64)
	s, _ := strconv.ParseUint(seq, 10, 64)
	return m, s
}

// Backlog returns the number of entries in the journal: writes not yet applied and
// acknowledged, plus applied ones kept behind an older unacknowledged entry (the
// journal is trimmed up to the oldest entry a flusher still holds). It is 0 when every
// write was applied. Export it as a metric: a backlog that keeps growing means no
// flusher runs, or Postgres refuses the writes (see the logs).
func (f *Flusher) Backlog(ctx context.Context) (int64, error) {
	return f.store.JournalLen(ctx, f.journal)
}

// failed counts and logs a failure, at most one log line a second.
func (f *Flusher) failed(what string, err error, attrs ...slog.Attr) {
	f.stats.errors.Add(1)
	now := time.Now().UnixNano()
	last := f.lastLog.Load()
	if now-last < int64(time.Second) || !f.lastLog.CompareAndSwap(last, now) {
		return
	}
	f.log.LogAttrs(context.Background(), slog.LevelWarn, "write-back flusher: "+what+" failed; retrying",
		append(attrs, slog.Any(attrError, err))...)
}

// backoff waits exponentially longer, with jitter, up to a cap.
type backoff struct {
	next, max time.Duration
	first     time.Duration
}

func (f *Flusher) backoff() *backoff {
	return &backoff{next: f.opts.RetryBackoff, first: f.opts.RetryBackoff, max: f.opts.MaxBackoff}
}

func (b *backoff) reset() { b.next = b.first }

// wait sleeps for the next interval (between half of it and all of it) or until ctx
// ends, whose error it returns.
func (b *backoff) wait(ctx context.Context) error {
	d := b.next/2 + rand.N(b.next/2+1)
	b.next = min(2*b.next, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
