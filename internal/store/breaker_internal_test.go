package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// fakeClock is the breaker's clock in these tests.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// TestBreaker walks the breaker through its states: closed until Failures consecutive
// failures, open for Cooldown, one probe at a time, closed again by a probe's success.
func TestBreaker(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	b := newBreaker(3, time.Second, clock.now)
	read := func(o outcome) error {
		t.Helper()
		probe, err := b.allow()
		if err != nil {
			return err
		}
		b.record(probe, o)
		return nil
	}
	mustPass := func(o outcome, why string) {
		t.Helper()
		if err := read(o); err != nil {
			t.Fatalf("%s: read refused: %v", why, err)
		}
	}
	mustSkip := func(why string) {
		t.Helper()
		if err := read(answered); !errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("%s: read let through (%v), want ErrBreakerOpen", why, err)
		}
	}

	mustPass(silent, "first failure")
	mustPass(silent, "second failure")
	mustPass(answered, "a success resets the streak")
	mustPass(busy, "a pool wait counts for nothing")
	mustPass(unknown, "nor does a caller giving up")
	mustPass(silent, "first failure again")
	mustPass(silent, "second failure again")
	mustPass(silent, "third failure opens the breaker")
	if b.opens.Load() != 1 {
		t.Fatalf("opens = %d, want 1", b.opens.Load())
	}
	mustSkip("open")
	clock.t = clock.t.Add(999 * time.Millisecond)
	mustSkip("still in the cooldown")

	clock.t = clock.t.Add(time.Millisecond)
	probe, err := b.allow()
	if err != nil || !probe {
		t.Fatalf("after the cooldown allow = %v, %v; want the probe", probe, err)
	}
	mustSkip("while the probe is out")
	b.record(true, silent)
	mustSkip("the probe failed: open again")
	if b.opens.Load() != 2 {
		t.Fatalf("opens = %d, want 2", b.opens.Load())
	}

	clock.t = clock.t.Add(time.Second)
	probe, _ = b.allow()
	b.record(probe, busy)
	probe, err = b.allow()
	if err != nil || !probe {
		t.Fatalf("after an inconclusive probe allow = %v, %v; want another probe at once", probe, err)
	}
	b.record(probe, answered)
	for i := range 10 {
		mustPass(answered, fmt.Sprint("closed again, read ", i))
	}
	mustPass(silent, "a failure after closing")
	mustPass(silent, "two")
	mustPass(silent, "three: the streak began afresh on closing")
	mustSkip("open after three")
}

// TestClassify: what each error says of Redis.
func TestClassify(t *testing.T) {
	live := context.Background()
	gone, cancel := context.WithCancel(live)
	cancel()
	opErr := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	for _, c := range []struct {
		name   string
		parent context.Context
		err    error
		queued bool
		want   outcome
	}{
		{"ok", live, nil, false, answered},
		{"miss", live, redis.Nil, false, answered},
		{"error reply", live, fmt.Errorf("store: get k: %w", redis.ErrNoScript), false, answered},
		{"read timeout", live, fmt.Errorf("store: get k: %w", opErr), false, silent},
		{"read timeout while queued", live, opErr, true, silent},
		{"refused", live, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, false, silent},
		{"deadline, not queued", live, context.DeadlineExceeded, false, silent},
		{"deadline while queued: a pool wait", live, fmt.Errorf("store: get k: %w", context.DeadlineExceeded), true, busy},
		{"pool timeout", live, redis.ErrPoolTimeout, false, busy},
		{"pool exhausted", live, redis.ErrPoolExhausted, false, busy},
		{"caller gave up", gone, context.Canceled, false, unknown},
		{"breaker", live, ErrBreakerOpen, false, untouched},
		{"something else", live, errors.New("store: lease: unexpected reply"), false, unknown},
	} {
		if got := classify(c.parent, c.err, c.queued); got != c.want {
			t.Errorf("%s: classify(%v) = %d, want %d", c.name, c.err, got, c.want)
		}
	}
}

// TestReadCtx: a read is bounded by a deadline without a timer (a Done of its
// parent's) only while it cannot wait for a pooled connection and the breaker has
// seen no failure in a row; otherwise its context is done at the timeout. A caller's
// sooner deadline is kept as it is. readCtxIn builds the deadline where Get says.
func TestReadCtx(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", PoolSize: 2})
	t.Cleanup(func() { rdb.Close() })
	s := New(rdb, time.Minute, "t").WithBreaker(3, time.Second)
	bare := func(why string, p pass) {
		t.Helper()
		ctx, cancel := s.readCtx(context.Background(), p)
		defer cancel()
		dl, ok := ctx.Deadline()
		if !ok || time.Until(dl) > time.Minute || ctx.Done() != nil {
			t.Fatalf("%s: deadline %v %v, Done %v: want a deadline in a minute and no timer", why, dl, ok, ctx.Done())
		}
	}
	timed := func(why string, p pass) {
		t.Helper()
		ctx, cancel := s.readCtx(context.Background(), p)
		defer cancel()
		if _, ok := ctx.Deadline(); !ok || ctx.Done() == nil {
			t.Fatalf("%s: want a context done at the timeout", why)
		}
	}
	bare("quiet", pass{})
	// Get's: the same deadline, in the context the caller allocated with its arguments.
	var dc deadlineCtx
	ctx, cancelIn := s.readCtxIn(context.Background(), pass{}, &dc)
	if dl, ok := ctx.Deadline(); ctx != &dc || !ok || time.Until(dl) > time.Minute || ctx.Done() != nil {
		t.Fatalf("readCtxIn: %T deadline %v %v, Done %v: want the caller's deadlineCtx, a deadline in a minute and no timer", ctx, dl, ok, ctx.Done())
	}
	cancelIn()
	timed("queued for the pool", pass{queued: true})
	timed("probing", pass{probe: true})
	s.gate.b.record(false, silent)
	timed("after a failure", pass{})
	s.gate.b.record(false, answered)
	bare("answered again", pass{})

	soon, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ctx, cancelSoon := s.readCtx(soon, pass{})
	defer cancelSoon()
	if ctx != soon {
		t.Fatal("a caller's sooner deadline was replaced")
	}
	ungated := New(rdb, time.Minute, "u")
	ctx, cancelUngated := ungated.readCtx(context.Background(), pass{})
	defer cancelUngated()
	if ctx.Done() == nil {
		t.Fatal("a store without a gate (pool unknown) read without a timer")
	}
}
