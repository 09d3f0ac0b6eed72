package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Concurrent GETs share round trips. While a read of a Store's gate is under way (the
// gate counts them, breaker.go), its Gets are not sent on connections of their own:
// they are queued on the client's go-redis AutoPipeliner (its async face), which
// sends what is queued as one pipeline on one connection of the client's pipeline
// pool as soon as the batch before it is answered. Sixteen goroutines reading different rows then cost Redis and the kernel
// a few writes and reads where they cost sixteen of each; on two CPUs shared by
// client and server that is most of a hit's cost (issue 16: about 2.5 times the hits
// per second of as many plain GETs). A lone Get, the one a latency is measured on, is
// sent as before, with no hand-off to the pipeliner's goroutine and no allocation
// more.
//
// What a read promises is unchanged. A queued GET is sent after Get was called, so it
// reads Redis after every write that returned before (read-your-writes, see
// readthrough's hotkey.go). The pipeliner ignores a command's context once it is
// queued, so a batched Get waits for its reply for at most about the Store's timeout
// (deadlines) or the caller's deadline: a Redis that hangs fails it as it fails a GET
// sent alone, and the breaker counts it. Only reads while the breaker is quiet
// are batched; a probe, and reads after a failure, go alone.
//
// The pipeliner is the client's own (AsyncAutoPipeline: one per client, made at the
// first concurrent Get, with the client's AutoPipelineOptions if it was given some),
// so the client's hooks run for batched reads (its pipeline hooks, and its process
// hooks for a batch of one) and the client owns its goroutine: closing the client stops it.
// Only a single server's client (*redis.Client, Sentinel's included) batches: a
// Cluster or Ring client routes each key by itself.
type autoPipe struct {
	client *redis.Client
	ap     atomic.Pointer[redis.AutoPipeliner]

	mu  sync.Mutex
	off bool // Close was called, or the client has no pipeliner to give
}

// newAutoPipe returns the autoPipe of Stores over rdb; nil when rdb does not batch.
func newAutoPipe(rdb redis.UniversalClient) *autoPipe {
	c, ok := rdb.(*redis.Client)
	if !ok {
		return nil
	}
	return &autoPipe{client: c}
}

// pipeliner returns the pipeliner to send a Get on, or nil to send it alone: batching
// is off, or the client has none to give.
func (a *autoPipe) pipeliner() *redis.AutoPipeliner {
	if ap := a.ap.Load(); ap != nil {
		return ap
	}
	return a.start()
}

// start takes the client's pipeliner, unless batching is off.
func (a *autoPipe) start() *redis.AutoPipeliner {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.off {
		return nil
	}
	if ap := a.ap.Load(); ap != nil {
		return ap
	}
	ap, err := a.client.AsyncAutoPipeline()
	if err != nil {
		// The client is closed (its reads fail alone too) or its AutoPipelineOptions
		// are invalid: GETs go alone, as they did before batching.
		a.off = true
		return nil
	}
	a.ap.Store(ap)
	return ap
}

// wait sends cmd on ap and waits for its reply, for at most about w's timeout (see
// deadlines) or the caller's deadline if sooner. It returns the error of the wait, or
// nil once cmd holds its reply; after an error cmd must not be read: its reply may
// still be written into it.
func (a *autoPipe) wait(ctx context.Context, ap *redis.AutoPipeliner, cmd redis.Cmder, w *deadlines) error {
	f := ap.Submit(ctx, cmd)
	wctx := w.ctx(ctx)
	err := f.WaitContext(wctx)
	if err != nil && wctx.Err() != nil {
		return wctx.Err()
	}
	if errors.Is(err, redis.ErrClosed) {
		// The client's pipeliner was closed: the next concurrent Get asks the client
		// for its pipeliner again, which is a new one unless the client is closed too.
		a.ap.CompareAndSwap(ap, nil)
	}
	return nil
}

// deadlines are the deadlines a Store's batched Gets wait with: each is between
// timeout and 1.25 timeout from when a Get takes it, and shared with the Gets of the
// same quarter of timeout, so that a batched Get costs no timer of its own (one of its
// own cost a third of a batched hit: measured 26-31 µs a hit at 16 goroutines, against
// 20 µs without).
type deadlines struct {
	timeout time.Duration
	// unbounded: batched Gets wait with the caller's context alone, as with the
	// pipeliner alone (the test control, testhooks.Read.UnboundedBatches).
	unbounded bool
	cur       atomic.Pointer[sharedDeadline]
}

// sharedDeadline is a deadline and the one context (and timer) that ends at it.
type sharedDeadline struct {
	at     time.Time
	ctx    context.Context
	cancel context.CancelFunc // not called: the timer releases the context at the deadline
}

// ctx returns the context a batched Get waits with: the shared deadline's, or ctx if
// its deadline is sooner. A cancellation of ctx without a deadline does not end the
// wait, as it does not end a GET sent alone: go-redis bounds a read in flight by its
// connection's deadline, not by ctx.Done.
func (w *deadlines) ctx(ctx context.Context) context.Context {
	if w.timeout <= 0 || w.unbounded {
		return ctx
	}
	now := time.Now()
	d := w.cur.Load()
	if d == nil || d.at.Before(now.Add(w.timeout)) {
		nd := &sharedDeadline{at: now.Add(w.timeout + w.timeout/4)}
		nd.ctx, nd.cancel = context.WithDeadline(context.Background(), nd.at)
		if w.cur.CompareAndSwap(d, nd) {
			d = nd
		} else {
			nd.cancel()
			d = w.cur.Load()
		}
	}
	if dl, ok := ctx.Deadline(); ok && dl.Before(d.at) {
		return ctx
	}
	return d.ctx
}

// close turns batching off; the pipeliner is the client's, and stays.
func (a *autoPipe) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.off = true
	a.ap.Store(nil)
}
