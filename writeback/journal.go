package writeback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
)

// Errors returned by the package.
var (
	// ErrConfig reports options that cannot work; the message says which and why.
	ErrConfig = errors.New("writeback: bad configuration")
	// ErrBadChange reports a change that cannot be encoded, or a journal entry that
	// cannot be decoded or applied as written; such an entry goes to the dead-letter
	// stream.
	ErrBadChange = errors.New("writeback: bad change")
	// ErrNoDeadLetter reports a dead-letter id that is not in the stream.
	ErrNoDeadLetter = errors.New("writeback: no such dead letter")
	// ErrWritePending reports a dead letter not retried because a newer write of its
	// row is pending: that write replaces the row when it is flushed.
	ErrWritePending = errors.New("writeback: a newer write of the row is pending")
	// ErrLate reports a write that was refused, with nothing written, because it took
	// longer than a minute (or a flusher's LandingTimeout) between its two steps, its
	// journal entry and its landing in the row's slot (see the package doc, "Redis
	// Cluster"). It may be retried.
	ErrLate = store.ErrLate
	// ErrRaced reports a soft delete that raced three times in a row with other
	// writes of its row: nothing was written. It may be retried.
	ErrRaced = store.ErrRaced
)

// WriteOptions configure write-back writes (a write-back model's Create, Save and
// Delete): how long one may take, and how durable it is when it returns. The zero
// value acknowledges a write once Redis has executed it; how durable that is depends
// on the server's persistence settings (see the package doc).
type WriteOptions struct {
	// WaitAOF makes Save wait, after the write, until Redis has fsynced it to its
	// append-only file (WAITAOF, Redis 7.2 and later), so that an acknowledged write
	// survives a crash of Redis even with appendfsync everysec. Under everysec that
	// wait is up to a second (the next fsync); under appendfsync always it is nothing.
	// On a server without WAITAOF it is skipped, and a warning is logged once. With
	// appendonly off the wait fails and so does Save.
	WaitAOF bool
	// WaitAOFReplicas is how many replicas must also have fsynced the write (WAITAOF's
	// numreplicas); it implies WaitAOF. Default 0.
	WaitAOFReplicas int
	// WaitAOFTimeout bounds the wait. Default 2s, over appendfsync everysec's second.
	// When it passes Save returns an error;
	// the write may still be applied (it is in Redis' memory and journal).
	WaitAOFTimeout time.Duration
	// Timeout bounds the round trip of a write to Redis. Default 1s: longer than the
	// read timeout (readthrough's RedisTimeout, 100ms), because a read that times out
	// falls back to Postgres, while a write-back write that times out fails.
	Timeout time.Duration
}

func (o WriteOptions) withDefaults() (WriteOptions, error) {
	if o.WaitAOFReplicas > 0 {
		o.WaitAOF = true
	}
	if o.WaitAOFTimeout == 0 {
		o.WaitAOFTimeout = 2 * time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	switch {
	case o.WaitAOFReplicas < 0:
		return o, fmt.Errorf("%w: WaitAOFReplicas %d is negative", ErrConfig, o.WaitAOFReplicas)
	case o.Timeout < 0:
		return o, fmt.Errorf("%w: Timeout %v is negative", ErrConfig, o.Timeout)
	case o.WaitAOFTimeout < time.Millisecond:
		return o, fmt.Errorf("%w: WaitAOFTimeout %v must be at least 1ms (WAITAOF with timeout 0 blocks forever)", ErrConfig, o.WaitAOFTimeout)
	}
	return o, nil
}

// Journal journals the write-back writes of one model: package readthrough makes one
// per registered model and calls it for the model's Create, Save and Delete; the
// Flusher reads what it wrote. Each write is one script on Redis (see the package
// doc), followed on the same connection by the wait for the AOF fsync when
// WriteOptions ask for it. Applications do not make one (NewJournal takes the
// cache's internal store); they set WriteOptions in readthrough.ModelOptions. It is
// safe for concurrent use.
type Journal struct {
	store  *store.Store // with WriteOptions.Timeout
	model  store.Model
	prefix keys.Prefix // of the journal
	wait   *store.AOFWait
	log    *slog.Logger
	noWait atomic.Bool // set once the server turned out not to know WAITAOF
}

// NewJournal returns the journal of the model m, in its key space's prefix, writing
// through s with opts (defaults applied); log receives the warning for a server without
// WAITAOF.
func NewJournal(s *store.Store, m store.Model, opts WriteOptions, log *slog.Logger) (*Journal, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	j := &Journal{store: s.WithTimeout(opts.Timeout), model: m, prefix: keys.Prefix(m.Space().Prefix()), log: log}
	if opts.WaitAOF {
		j.wait = &store.AOFWait{Replicas: opts.WaitAOFReplicas, Timeout: opts.WaitAOFTimeout}
	}
	return j, nil
}

// Write journals c, a write of the row k, and makes entry the row's pending record
// and its cached value for ttl (0: the value key is deleted instead, and the pending
// record answers reads). Like a lease, it records the model in the registry first,
// so the invalidator knows the version whose keys it must delete. An error wrapping
// ErrBadChange means c could not be encoded and nothing was written; one wrapping
// store.ErrNotDurable, that the write was journaled but not confirmed fsynced (it
// may still be applied); one wrapping ErrLate, that the write was refused because it
// took too long between its two steps (see the package doc), and nothing was written.
func (j *Journal) Write(ctx context.Context, k keys.Key, entry []byte, ttl time.Duration, c Change) error {
	payload, err := c.marshal()
	if err != nil {
		return err
	}
	_, err = j.store.Journal(ctx, j.model, j.prefix, k, entry, ttl, payload, j.waitAOF())
	return j.waited(err)
}

// SoftDelete journals c, a soft delete of the row k, over the row's pending write if
// it has one (see store.SoftDelete: the entry is built in the script, from head and
// that write's entry). Its errors are Write's; the outcome says whether it journaled
// anything.
func (j *Journal) SoftDelete(ctx context.Context, k keys.Key, head string, ttl time.Duration, c Change) (store.SoftDeleteOutcome, error) {
	payload, err := c.marshal()
	if err != nil {
		return 0, err
	}
	outcome, _, err := j.store.SoftDelete(ctx, j.model, j.prefix, k, head, ttl, payload, j.waitAOF())
	return outcome, j.waited(err)
}

// waitAOF returns the AOF wait to ask for, nil for none.
func (j *Journal) waitAOF() *store.AOFWait {
	if j.noWait.Load() {
		return nil
	}
	return j.wait
}

// waited turns a write's error into nil when only the AOF wait failed, because the
// server does not know WAITAOF: it warns once, and waits no more.
func (j *Journal) waited(err error) error {
	if !errors.Is(err, store.ErrUnsupported) {
		return err
	}
	if j.noWait.CompareAndSwap(false, true) {
		j.log.Warn("redis does not support WAITAOF (Redis 7.2 or later); write-back writes are acknowledged without waiting for the AOF fsync",
			slog.Any("error", err))
	}
	return nil
}
