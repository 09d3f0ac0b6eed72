package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Reads of entries (Get, GetMany, their WithTTL forms, TakeLease and TakeLeases) pass
// through the Store's gate, which does two things:
//
//   - It tells a wait for a connection from the client's pool from a Redis that does
//     not answer. A busy pool is reported as ErrBusy: the read never reached Redis, and
//     the caller may wait and try again rather than treat Redis as down.
//   - It holds a circuit breaker: after Failures reads in a row found Redis not
//     answering (a timeout on the connection, a refused or lost connection), reads are
//     refused with ErrBreakerOpen, without a round trip, for Cooldown. Then one read
//     probes Redis: its success closes the breaker, its failure opens it for another
//     Cooldown. The others are refused until the probe is back.
//
// Writes (invalidations, fills, releases, write-back) never pass the gate: they are
// always tried, so a write never leaves a stale entry because of the breaker alone.
//
// The breaker is a small state machine of our own rather than sony/gobreaker: every
// hit passes it, and a closed breaker here costs two atomic loads, where gobreaker's
// takes a mutex and reads the clock on every call (and its two-step form allocates a
// closure). What counts as a failure (pool waits and the caller's own deadline do not)
// would have to be wired into gobreaker's callbacks anyway.

// ErrBreakerOpen is returned by the Store's reads while its circuit breaker is open:
// Redis was not tried.
var ErrBreakerOpen = errors.New("store: redis skipped: circuit breaker open after repeated timeouts")

// ErrBusy wraps the error of a read that waited for a connection from the client's pool
// and gave up: Redis was not reached.
var ErrBusy = errors.New("store: redis client's connection pool busy")

// Breaker states.
const (
	closed int32 = iota
	open
	probing // open, one read probing Redis
)

// breaker is a circuit breaker counting consecutive failures. Safe for concurrent use.
type breaker struct {
	failures int64
	cooldown time.Duration
	now      func() time.Time

	state  atomic.Int32
	streak atomic.Int64 // consecutive failures while closed
	opens  atomic.Uint64

	mu    sync.Mutex
	until time.Time // open: reads are refused until then
}

func newBreaker(failures int, cooldown time.Duration, now func() time.Time) *breaker {
	return &breaker{failures: int64(failures), cooldown: cooldown, now: now}
}

// allow says whether a read may go to Redis; probe is true for the one read that tests
// Redis after the cooldown, which must report its outcome to record.
func (b *breaker) allow() (probe bool, err error) {
	if b.state.Load() == closed {
		return false, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state.Load() {
	case closed:
		return false, nil
	case open:
		if b.now().Before(b.until) {
			return false, ErrBreakerOpen
		}
		b.state.Store(probing)
		return true, nil
	}
	return false, ErrBreakerOpen // a probe is out
}

// outcome is what a read says about Redis.
type outcome int8

const (
	answered  outcome = iota // Redis answered (a miss and an error reply included)
	silent                   // Redis did not answer
	busy                     // the read waited for a connection and got none
	unknown                  // nothing learnt: the caller gave up, another error
	untouched                // the breaker refused the read
)

// record takes the outcome of a read that allow let through.
func (b *breaker) record(probe bool, o outcome) {
	if probe {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch o {
		case answered:
			b.streak.Store(0)
			b.state.Store(closed)
		case silent:
			b.trip()
		default:
			b.state.Store(open) // cooldown already over: the next read probes again
		}
		return
	}
	switch o {
	case answered:
		if b.streak.Load() != 0 {
			b.streak.Store(0)
		}
	case silent:
		if b.streak.Add(1) >= b.failures {
			b.mu.Lock()
			if b.state.Load() == closed {
				b.trip()
			}
			b.mu.Unlock()
		}
	}
}

// quiet reports that the breaker is closed and the last read it recorded found Redis
// answering: two atomic loads.
func (b *breaker) quiet() bool {
	return b.state.Load() == closed && b.streak.Load() == 0
}

// trip opens the breaker for a cooldown; b.mu is held.
func (b *breaker) trip() {
	b.until = b.now().Add(b.cooldown)
	b.streak.Store(0)
	b.state.Store(open)
	b.opens.Add(1)
}

// gate is what a Store's reads pass (see above); Stores made by WithTimeout share it.
// A nil gate lets everything through and classifies nothing.
type gate struct {
	b *breaker // nil: no breaker
	// pool is the client's pool size, 0 when unknown (Cluster and Ring clients: one
	// pool per node). inflight counts the gated reads under way: one that began with
	// the pool full and ended on the context's deadline waited for a connection.
	pool     int64
	inflight atomic.Int64
}

// pass is a read's ticket through the gate.
type pass struct {
	probe, queued bool
	// concurrent: another gated read was under way when this one entered (a Get may
	// then be batched, autopipe.go).
	concurrent bool
}

// WithBreaker returns a Store sharing s's client, whose reads of entries pass a gate
// with a circuit breaker that opens after failures consecutive reads found Redis not
// answering and stays open for cooldown (see the top of breaker.go); failures <= 0
// keeps the gate without a breaker, which still reports pool waits as ErrBusy.
func (s *Store) WithBreaker(failures int, cooldown time.Duration) *Store {
	g := &gate{pool: poolSize(s.rdb)}
	if failures > 0 {
		g.b = newBreaker(failures, cooldown, time.Now)
	}
	return &Store{rdb: s.rdb, timeout: s.timeout, instance: s.instance + ".b", gate: g, pipe: s.pipe, waits: s.waits}
}

// BreakerOpens returns how many times the Store's breaker opened.
func (s *Store) BreakerOpens() uint64 {
	if s.gate == nil || s.gate.b == nil {
		return 0
	}
	return s.gate.b.opens.Load()
}

func poolSize(rdb redis.UniversalClient) int64 {
	if c, ok := rdb.(*redis.Client); ok {
		return int64(c.Options().PoolSize)
	}
	return 0
}

// enter lets a read through, or refuses it with ErrBreakerOpen.
func (g *gate) enter() (pass, error) {
	var p pass
	if g == nil {
		return p, nil
	}
	if g.b != nil {
		probe, err := g.b.allow()
		if err != nil {
			return p, err
		}
		p.probe = probe
	}
	n := g.inflight.Add(1)
	p.queued = g.pool > 0 && n > g.pool
	p.concurrent = n > 1
	return p, nil
}

// leave records the outcome of a read that entered, err being what the client
// returned and parent the caller's context; it returns err, wrapped in ErrBusy when
// the read waited for a connection and got none.
func (g *gate) leave(parent context.Context, p pass, err error) error {
	if g == nil {
		return err
	}
	g.inflight.Add(-1)
	o := classify(parent, err, p.queued)
	if o == busy {
		err = fmt.Errorf("%w: %w", ErrBusy, err)
	}
	if g.b != nil {
		g.b.record(p.probe, o)
	}
	return err
}

// classify says what err, returned by a read, tells of Redis. queued says the read
// began while the Store's reads filled the client's pool.
func classify(parent context.Context, err error, queued bool) outcome {
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		return answered
	case errors.Is(err, ErrBreakerOpen):
		return untouched
	case parent.Err() != nil:
		return unknown // the caller gave up, or its own deadline passed
	case errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrPoolExhausted):
		return busy
	case isReply(err):
		return answered // an error reply: Redis is there
	case queued && errors.Is(err, context.DeadlineExceeded) && !onConnection(err):
		// The deadline passed with no I/O error: the read waited for a connection.
		return busy
	case onConnection(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, redis.ErrClosed):
		return silent
	}
	return unknown
}

// isReply reports whether err is an error reply of Redis. It is apart from classify
// so that the variable errors.As needs is allocated only when classify gets this far,
// not on every read.
func isReply(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply)
}

// onConnection reports an error of the connection itself (a timeout while writing or
// reading, a refused or reset connection), as opposed to a wait before it.
func onConnection(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, os.ErrDeadlineExceeded)
}
