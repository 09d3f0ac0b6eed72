// Package testhooks lets pgcache's own tests stop a read, a write or a write-back flush
// at the points where races and crashes happen. The hooks travel in a context, as net/http/httptrace's do: the tests
// that use them live in the integration module, and a context reaches across the module
// line without widening the library's API. Production code finds no hooks, at the cost
// of a context lookup on a cache miss, a write or a flushed batch.
package testhooks

import "context"

// Read holds the hooks of reads and writes through a readthrough repository. Each may
// be nil. They run for calls made with a context from WithRead, and for the work those
// calls start (a miss's fill, a write's cache effects).
type Read struct {
	// Joined runs once a miss has joined (or begun) its key's flight.
	Joined func(key string)
	// BeforeLoad runs before a miss reads the database, after it took its lease if it
	// takes one.
	BeforeLoad func(key string)
	// AfterLoad runs after a miss has read the database and before it stores the row.
	AfterLoad func(key string)
	// AfterCommit runs after a write committed, before its cache effects.
	AfterCommit func(key string)
	// Unfenced makes fills plain SETs, as caches without fencing do, to show that the
	// tests of fencing can fail.
	Unfenced bool
}

type readKey struct{}

// WithRead returns a context carrying h.
func WithRead(ctx context.Context, h *Read) context.Context {
	return context.WithValue(ctx, readKey{}, h)
}

func read(ctx context.Context) *Read {
	h, _ := ctx.Value(readKey{}).(*Read)
	return h
}

// Joined runs ctx's Joined hook, if any.
func Joined(ctx context.Context, key string) {
	if h := read(ctx); h != nil && h.Joined != nil {
		h.Joined(key)
	}
}

// BeforeLoad runs ctx's BeforeLoad hook, if any.
func BeforeLoad(ctx context.Context, key string) {
	if h := read(ctx); h != nil && h.BeforeLoad != nil {
		h.BeforeLoad(key)
	}
}

// AfterLoad runs ctx's AfterLoad hook, if any.
func AfterLoad(ctx context.Context, key string) {
	if h := read(ctx); h != nil && h.AfterLoad != nil {
		h.AfterLoad(key)
	}
}

// AfterCommit runs ctx's AfterCommit hook, if any.
func AfterCommit(ctx context.Context, key string) {
	if h := read(ctx); h != nil && h.AfterCommit != nil {
		h.AfterCommit(key)
	}
}

// Unfenced reports whether ctx asks for unfenced fills.
func Unfenced(ctx context.Context) bool {
	h := read(ctx)
	return h != nil && h.Unfenced
}

// Flush holds the hooks of a write-back flusher. Each may be nil. They run for a
// flusher whose Run was given a context from WithFlush.
type Flush struct {
	// AfterRead runs after entries were read or claimed; held is the batch so far.
	AfterRead func(held int)
	// BeforeApply runs after a batch's versions were checked, before its transaction.
	BeforeApply func()
	// BeforeCommit runs inside a batch's transaction, after its statements ran and its
	// versions matched, before the commit.
	BeforeCommit func()
	// AfterCommit runs after a batch committed, before its pending records are cleared.
	AfterCommit func()
	// AfterClear runs after the pending records were cleared, before the entries are
	// acknowledged.
	AfterClear func()
}

type flushKey struct{}

// WithFlush returns a context carrying h.
func WithFlush(ctx context.Context, h *Flush) context.Context {
	return context.WithValue(ctx, flushKey{}, h)
}

// FlushFrom returns the flush hooks ctx carries; a Flush without hooks if none.
func FlushFrom(ctx context.Context) *Flush {
	if h, _ := ctx.Value(flushKey{}).(*Flush); h != nil {
		return h
	}
	return &Flush{}
}

// Run runs f, if it is not nil.
func Run(f func()) {
	if f != nil {
		f()
	}
}
