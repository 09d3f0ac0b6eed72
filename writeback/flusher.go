package writeback

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/internal/retry"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
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
	// LandingTimeout is how long a flusher waits for a write whose journal entry it read
	// before the write landed (on a Cluster a write is two steps: see the package
	// doc): after that, measured from the entry's id (the time of the Redis master of
	// its journal shard), it gives the write up and fences it, so that it can no longer
	// land (its Save fails with ErrLate). Default 2m.
	LandingTimeout time.Duration
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
		_, _ = rand.Read(b[:])
		o.Consumer = fmt.Sprintf("%s-%d-%s", cmp.Or(host, "flusher"), os.Getpid(), hex.EncodeToString(b[:]))
	}
	o.BatchSize = cmp.Or(o.BatchSize, 1000)
	o.FlushInterval = cmp.Or(o.FlushInterval, 100*time.Millisecond)
	o.MaxAttempts = cmp.Or(o.MaxAttempts, 3)
	o.RetryBackoff = cmp.Or(o.RetryBackoff, 50*time.Millisecond)
	o.MaxBackoff = cmp.Or(o.MaxBackoff, 5*time.Second)
	o.ClaimAfter = cmp.Or(o.ClaimAfter, 30*time.Second)
	o.ApplyTimeout = cmp.Or(o.ApplyTimeout, 30*time.Second)
	o.LandingTimeout = cmp.Or(o.LandingTimeout, 2*time.Minute)
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
	case o.ApplyTimeout <= 0 || o.ShutdownTimeout <= 0 || o.RedisTimeout <= 0 || o.LandingTimeout <= 0:
		return o, fmt.Errorf("%w: timeouts must be positive", ErrConfig)
	}
	return o, nil
}

// Flusher applies write-back writes from the journal to Postgres. Create it with
// NewFlusher and call Run; run one or more per prefix, in the application or in the
// worker. Its methods are safe for concurrent use; Run is called once.
type Flusher struct {
	db     *gorm.DB
	store  *store.Store
	opts   FlusherOptions
	prefix keys.Prefix
	// streams are the journal's streams (see store.JournalStreams), set by Run, read by
	// its goroutine only.
	streams []string
	log     *slog.Logger
	stats   counters
	// logLimit keeps repeated failures to one log line a second.
	logLimit rate.Sometimes
	// hooks are the test hooks of Run's context (see internal/testhooks); set by Run,
	// read by it and the flushes it starts.
	hooks *testhooks.Flush
	dec   decoder // used by flush, which runs one batch at a time
}

// NewFlusher returns a flusher applying to Postgres through db the writes journaled in
// rdb under opts.Prefix. In an application, pass the *gorm.DB and the Redis client
// given to readthrough.New, and its Prefix.
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
		hooks:    new(testhooks.Flush),
		db:       db,
		store:    store.New(rdb, opts.RedisTimeout, "flusher."+opts.Consumer),
		opts:     opts,
		prefix:   keys.Prefix(opts.Prefix),
		log:      opts.Logger.With(slog.String("consumer", opts.Consumer)),
		logLimit: rate.Sometimes{Interval: time.Second},
	}, nil
}

// Log attribute keys.
const (
	attrError = "error"
	attrRows  = "rows"
	attrKey   = "key"
)

const (
	// maxBlock is the longest one read waits for new entries: go-redis does not end a
	// blocking read when its context does, so Run sees its context end within that.
	maxBlock = 250 * time.Millisecond
	// pollMin is how often a flusher on a Cluster reads the shards while entries come.
	pollMin = 20 * time.Millisecond
)

// Run reads the journal and applies its writes until ctx ends, then applies the
// entries it holds (within ShutdownTimeout) and returns nil (a wait for new entries
// lasts at most maxBlock); it returns an error only
// when that last flush fails (its entries stay pending, for this consumer or another
// flusher to claim). Failures while running are logged, counted and retried with
// capped, jittered backoff.
//
// Each turn it makes sure the consumer group exists, reads entries into the batch it
// holds (see read), and applies the batch once it is full or its first entry is
// FlushInterval old. A batch is applied in a goroutine of Run's while Run reads the
// next one (one read, without waiting for new entries), so that Redis answers the
// read while Postgres applies; one batch is applied at a time, and the next is sorted
// out only after the one before was cleared and acknowledged.
func (f *Flusher) Run(ctx context.Context) error {
	f.hooks = testhooks.FlushFrom(ctx)
	bo := f.backoff()
	r := &reader{own: true}
	needGroup := true
	var fl *inflight // the batch being applied or settled, nil for none
	for ctx.Err() == nil {
		if needGroup {
			if err := f.createGroups(ctx); err != nil {
				f.retry(ctx, bo, "create consumer group", err)
				continue
			}
			needGroup = false
		}
		// A read of this consumer's own entries would return those being applied.
		if fl != nil && (r.own || f.hooks.NoReadAhead) {
			f.finish(ctx, fl, r, bo, true)
			fl = nil
			continue
		}
		if err := f.read(ctx, r, fl == nil || fl.applied); err != nil {
			if ctx.Err() == nil {
				if errors.Is(err, store.ErrNoGroup) {
					needGroup = true // the journal was deleted
				}
				f.retry(ctx, bo, "read journal", err)
			}
			continue
		}
		if fl != nil && !fl.applied { // read ahead once, then wait for the batch being applied
			f.finish(ctx, fl, r, bo, false)
			continue
		}
		if !r.due(f.opts) {
			continue
		}
		fl = f.start(ctx, r.held, fl)
		r.held = nil
	}
	if fl != nil {
		<-fl.done // and so the batch before it
		if !fl.applied {
			if fl.err != nil {
				fl.held = fl.batch // still ours: apply them on stop
			}
			r.held = append(fl.held, r.held...)
		}
	}
	return f.stop(ctx, r.held)
}

// inflight is a batch applied, then settled, by flush's steps in a goroutine of Run's
// (see start).
type inflight struct {
	batch []store.JournalEntry
	// prev is the batch before, settled while this one is applied, until finish took
	// up its outcome.
	prev *inflight
	// applied is set by finish once the batch's transaction ended and its outcome
	// was taken up; only Run's goroutine reads and writes it.
	applied bool
	// transacted is closed once the batch's transaction ended (steps 1 to 3), done once
	// the batch was settled too (step 4) and so was the batch before it.
	transacted, done chan struct{}
	// held and err are the outcome of steps 1 to 3, set before transacted is closed;
	// settleErr that of step 4, set before done is closed.
	held      []store.JournalEntry
	err       error
	settleErr error
}

// start applies batch in a new goroutine, after which it settles it (flush's step 4)
// once prev, the batch before it, is settled. So a batch's transaction runs while the
// batch before it is settled (see flush), and at most two batches are under way. Run
// waits for both (finish) before it returns.
func (f *Flusher) start(ctx context.Context, batch []store.JournalEntry, prev *inflight) *inflight {
	fl := &inflight{batch: batch, prev: prev, transacted: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(fl.done)
		a, err := f.applyBatch(ctx, batch)
		fl.held, fl.err = a.held, err
		close(fl.transacted)
		if prev != nil {
			<-prev.done
		}
		if err == nil {
			fl.settleErr = f.settle(ctx, a)
		}
	}()
	return fl
}

// finish waits for fl's transaction and for the batch before it to be settled, or
// with whole for fl to be settled too, and takes up their outcome: the entries fl held
// (not landed yet) go back into r's batch; after a failure, r's batch is dropped and
// the consumer's own entries read again, after a backoff.
func (f *Flusher) finish(ctx context.Context, fl *inflight, r *reader, bo *backoff.ExponentialBackOff, whole bool) {
	<-fl.transacted
	prevFailed := false
	if p := fl.prev; p != nil {
		fl.prev = nil
		<-p.done
		if prevFailed = p.settleErr != nil; prevFailed {
			f.failedBatch(ctx, r, bo, p.settleErr)
		}
	}
	if !fl.applied {
		fl.applied = true
		if fl.err != nil {
			f.failedBatch(ctx, r, bo, fl.err)
			return
		}
		if !prevFailed {
			bo.Reset() // a batch went through: the next failure waits the first interval again
		}
		if len(fl.held) > 0 {
			if len(r.held) == 0 {
				r.since = time.Now() // entries waiting to land: look again in FlushInterval
			}
			r.held = append(fl.held, r.held...)
		}
	}
	if !whole {
		return
	}
	<-fl.done
	if fl.settleErr != nil {
		f.failedBatch(ctx, r, bo, fl.settleErr)
	}
}

// failedBatch drops r's batch after a batch failed, so that the consumer's own
// entries are read again (those of the failed batch among them), after a backoff.
func (f *Flusher) failedBatch(ctx context.Context, r *reader, bo *backoff.ExponentialBackOff, err error) {
	if !f.hooks.ForgetFailed {
		r.held = nil
		r.own = true // the entries are still ours, and those read since: read them again
	}
	f.retry(ctx, bo, "flush", err)
}

// createGroups finds the journal's streams and makes sure each has the consumer group.
func (f *Flusher) createGroups(ctx context.Context) error {
	streams, err := f.store.JournalStreams(ctx, f.prefix)
	if err != nil {
		return err
	}
	for _, st := range streams {
		if err := f.store.CreateGroup(ctx, st, f.opts.Group); err != nil {
			return err
		}
	}
	f.streams = streams
	return nil
}

// reader is where Run is in the journal, and the batch it holds.
type reader struct {
	held  []store.JournalEntry
	since time.Time // when the first held entry was read
	// idle is, on a Cluster, how long the next read waits when the shards have no new
	// entries (see read).
	idle time.Duration
	// own is set while this consumer's unacknowledged entries are to be read first
	// (after a start, or a failed flush).
	own bool
	// nextClaim is when to scan the group for entries of stopped flushers again;
	// claimCursor is where the scan under way is in the stream claimStream indexes
	// ("" for none).
	nextClaim   time.Time
	claimStream int
	claimCursor string
}

// due reports whether the batch held is to be applied: it is full, or its first entry
// is FlushInterval old.
func (r *reader) due(o FlusherOptions) bool {
	return len(r.held) > 0 && (len(r.held) >= o.BatchSize || time.Since(r.since) >= o.FlushInterval)
}

// read adds to the batch, while it has room, entries of the journal: claimed from
// stopped flushers (a scan every ClaimAfter/2), this consumer's own unacknowledged
// ones, or new ones, waiting for them, if wait is set, at most until the batch is due
// or the next scan.
func (f *Flusher) read(ctx context.Context, r *reader, wait bool) error {
	room := f.opts.BatchSize - len(r.held)
	if room <= 0 {
		return nil
	}
	var got []store.JournalEntry
	var err error
	now := time.Now()
	switch {
	case !now.Before(r.nextClaim):
		got, err = f.claim(ctx, r, room, now)
	case r.own:
		got, err = f.store.ReadJournals(ctx, f.streams, f.opts.Group, f.opts.Consumer, f.perStream(room), 0, true)
		if err == nil && len(got) < f.perStream(room) {
			r.own = false
		}
	case !wait:
		got, err = f.store.ReadJournals(ctx, f.streams, f.opts.Group, f.opts.Consumer, f.perStream(room), 0, false)
	default:
		block := f.opts.FlushInterval
		if len(r.held) > 0 {
			block = time.Until(r.since.Add(f.opts.FlushInterval))
		}
		limit := maxBlock
		if f.hooks.UncappedBlock {
			limit = block
		}
		if f.store.Sharded() {
			// Reads of a Cluster's shards do not block in Redis (one XREADGROUP cannot
			// wait on streams in several slots): they poll, every pollMin while entries
			// come, less often the longer none do, up to FlushInterval.
			r.idle = min(max(2*r.idle, pollMin), f.opts.FlushInterval)
			limit = r.idle
		}
		block = max(min(block, time.Until(r.nextClaim), limit), time.Millisecond)
		got, err = f.store.ReadJournals(ctx, f.streams, f.opts.Group, f.opts.Consumer, f.perStream(room), block, false)
		if len(got) > 0 {
			r.idle = 0
		}
	}
	if err != nil || len(got) == 0 {
		return err
	}
	f.stats.read.Add(uint64(len(got)))
	if len(r.held) == 0 {
		r.since = time.Now()
	}
	r.held = append(r.held, got...)
	if f.hooks.AfterRead != nil {
		f.hooks.AfterRead(len(r.held))
	}
	return nil
}

// perStream is how many entries to read of each stream for room entries in all.
func (f *Flusher) perStream(room int) int {
	return max(1, (room+len(f.streams)-1)/len(f.streams))
}

// claim takes over up to room entries that other flushers were given and have not
// acknowledged for ClaimAfter, going on with the scan under way (through the streams
// one after the other). At the end of a scan it prunes the consumers that stopped and
// schedules the next scan.
func (f *Flusher) claim(ctx context.Context, r *reader, room int, now time.Time) ([]store.JournalEntry, error) {
	if r.claimStream >= len(f.streams) {
		r.claimStream, r.claimCursor = 0, ""
	}
	st := f.streams[r.claimStream]
	got, next, err := f.store.ClaimJournal(ctx, st, f.opts.Group, f.opts.Consumer, f.opts.ClaimAfter, r.claimCursor, room)
	if err != nil {
		return nil, err
	}
	f.stats.claimed.Add(uint64(len(got)))
	r.claimCursor = next
	if next == "" {
		f.prune(ctx, st)
		r.claimStream++
		if r.claimStream == len(f.streams) {
			r.claimStream = 0
			r.nextClaim = now.Add(max(f.opts.ClaimAfter/2, time.Millisecond))
		}
	}
	return got, nil
}

// prune forgets consumers that stopped: those idle for ten times ClaimAfter, whose
// entries were claimed since. Failures are only logged: the next sweep tries again.
func (f *Flusher) prune(ctx context.Context, stream string) {
	n, err := f.store.PruneConsumers(ctx, stream, f.opts.Group, f.opts.Consumer, 10*f.opts.ClaimAfter)
	if err != nil {
		f.failed("prune consumers", err)
		return
	}
	if n > 0 {
		f.log.Info("writeback: removed stopped flushers from the consumer group", slog.Int("consumers", n))
	}
}

// stop applies the entries held when Run's context ended.
func (f *Flusher) stop(ctx context.Context, held []store.JournalEntry) error {
	if len(held) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.opts.ShutdownTimeout)
	defer cancel()
	if _, err := f.flush(ctx, held); err != nil {
		return fmt.Errorf("writeback: flush %d entries on stop (they stay pending for another flusher): %w", len(held), err)
	}
	return nil
}

// Backlog returns the number of entries in the journal: writes not yet applied and
// acknowledged, plus applied ones kept behind an older unacknowledged entry (the
// journal is trimmed up to the oldest entry a flusher still holds). It is 0 when every
// write was applied. Export it as a metric: a backlog that keeps growing means no
// flusher runs, or Postgres refuses the writes (see the logs).
func (f *Flusher) Backlog(ctx context.Context) (int64, error) {
	streams, err := f.store.JournalStreams(ctx, f.prefix)
	if err != nil {
		return 0, err
	}
	return f.store.JournalLen(ctx, streams...)
}

// failed counts a failure and logs it, at most one log line a second.
func (f *Flusher) failed(what string, err error, attrs ...slog.Attr) {
	f.stats.errors.Add(1)
	f.logLimit.Do(func() {
		f.log.LogAttrs(context.Background(), slog.LevelWarn, "write-back flusher: "+what+" failed; retrying",
			append(attrs, slog.Any(attrError, err))...)
	})
}

// retry counts and logs a failure of Run's loop, then waits for bo's next interval.
func (f *Flusher) retry(ctx context.Context, bo *backoff.ExponentialBackOff, what string, err error) {
	f.failed(what, err)
	_ = retry.Wait(ctx, bo)
}

// backoff returns the waits between retries: from RetryBackoff, doubling up to
// MaxBackoff, with jitter.
func (f *Flusher) backoff() *backoff.ExponentialBackOff {
	return retry.Backoff(f.opts.RetryBackoff, f.opts.MaxBackoff)
}
