package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Concurrent GETs share round trips. While a Store's Get is under way, the next ones
// are not sent on connections of their own: they are queued on the client's go-redis
// AutoPipeliner (its async face), which sends what is queued as one pipeline on one
// connection of the client's pipeline pool as soon as the batch before it is
// answered. Sixteen goroutines reading different rows then cost Redis and the kernel
// a few writes and reads where they cost sixteen of each; on two CPUs shared by
// client and server that is most of a hit's cost (issue 16: about 2.5 times the hits
// per second of as many plain GETs). A lone Get, the one a latency is measured on, is
// sent as before, with no hand-off to the pipeliner's goroutine and no allocation
// more.
//
// What a read promises is unchanged. A queued GET is sent after Get was called, so it
// reads Redis after every write that returned before (read-your-writes, see
// readthrough's hotkey.go). The pipeliner ignores a command's context once it is
// queued, so a batched Get waits for its reply for at most the Store's timeout (a
// timer of its own) and the caller's context: a Redis that hangs fails it as it fails
// a GET sent alone, and the breaker counts it. Only reads while the breaker is quiet
// are batched; a probe, and reads after a failure, go alone.
//
// The pipeliner is the client's own (AsyncAutoPipeline: one per client, made at the
// first concurrent Get, with the client's AutoPipelineOptions if it was given some),
// so the client's hooks run for batched reads (its pipeline hooks: go-redis sends
// them as pipelines) and the client owns its goroutine: closing the client stops it.
// Only a single server's client (*redis.Client, Sentinel's included) batches: a
// Cluster or Ring client routes each key by itself.
type autoPipe struct {
	client *redis.Client
	// unbounded waits for a batched Get's reply without the Store's timeout, as the
	// pipeliner alone does: the control of the test that a hung Redis fails batched
	// reads within it (testhooks.Read.UnboundedBatches).
	unbounded bool
	busy      atomic.Int64 // Gets under way, of every Store sharing the autoPipe
	ap        atomic.Pointer[redis.AutoPipeliner]

	mu  sync.Mutex
	off bool // Close was called, or the client has no pipeliner to give
}

// newAutoPipe returns the autoPipe of Stores over rdb; nil when rdb does not batch.
func newAutoPipe(rdb redis.UniversalClient, unbounded bool) *autoPipe {
	c, ok := rdb.(*redis.Client)
	if !ok {
		return nil
	}
	return &autoPipe{client: c, unbounded: unbounded}
}

// enter counts a Get under way and returns the pipeliner to send it on, or nil to
// send it alone: it is the only one, or batching is off. leave must follow.
func (a *autoPipe) enter() *redis.AutoPipeliner {
	if a.busy.Add(1) == 1 {
		return nil
	}
	if ap := a.ap.Load(); ap != nil {
		return ap
	}
	return a.start()
}

func (a *autoPipe) leave() { a.busy.Add(-1) }

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

// wait sends cmd on ap and waits for its reply, for at most timeout (when positive)
// and while ctx lasts. It returns the error of the wait, or nil once cmd holds its
// reply; after an error cmd must not be read: its reply may still be written into it.
func (a *autoPipe) wait(ctx context.Context, ap *redis.AutoPipeliner, cmd redis.Cmder, timeout time.Duration) error {
	f := ap.Submit(ctx, cmd)
	wctx := ctx
	if timeout > 0 && !a.unbounded {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
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

// close turns batching off; the pipeliner is the client's, and stays.
func (a *autoPipe) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.off = true
	a.ap.Store(nil)
}
