// Package testhooks lets pgcache's own tests stop a read, a write or a write-back flush
// at the points where races and crashes happen, and turn off the change stream's wait
// for visibility. The hooks travel in a context, as net/http/httptrace's do: the tests
// that use them live in the integration module, and a context reaches across the module
// line without widening the library's API. Production code finds no hooks, at the cost
// of a context lookup on a cache miss, a write, a flushed batch or a batch of changes.
package testhooks

import (
	"context"
	"net"
)

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
	// Unchecked makes lookups return the rows an entry names without checking that
	// they still hold the values asked for, as caches of index entries without the
	// check do, to show that the tests of the check can fail.
	Unchecked bool
	// BeforeNearStore runs after a read got an entry from Redis, before it keeps it in
	// the near tier.
	BeforeNearStore func(key string)
	// NearUnfenced makes near-tier stores ignore invalidations that arrived since the
	// Redis read, as a near cache without fencing does, to show that the test of that
	// fence can fail.
	NearUnfenced bool
	// Unshared, in the context of the *gorm.DB a readthrough.Cache is made with, makes
	// its reads as they were before hot keys were shared: each Get sends its own Redis
	// GET, and a GET that waited for a pooled connection falls back to Postgres like a
	// Redis that does not answer. It shows that the tests of sharing can fail.
	Unshared bool
	// UnboundedBatches, in the context of the *gorm.DB a readthrough.Cache is made
	// with, bounds its batched reads (Options.NoAutoPipeline) by the Redis client's own
	// timeouts instead of RedisTimeout, as go-redis' pipeliner does when it is used
	// alone: it shows that the test of the bound can fail.
	UnboundedBatches bool
	// JoinedGet runs when a Get joins another Get's Redis GET of its key, under way.
	JoinedGet func(key string)
	// Batched runs when a Get's GET is queued on the client's pipeliner, to be sent
	// with others (the Cache's Options.NoAutoPipeline).
	Batched func(key string)
	// UnorderedGets, in the context of the *gorm.DB a readthrough.Cache is made with,
	// lets a Get take the reply of any GET of its key under way, even one sent before
	// the Get began (and so perhaps before the caller's own write invalidated the
	// key), as sharing without the flights' clock would. It shows that the test of
	// read-your-writes under sharing can fail.
	UnorderedGets bool
	// FillErrorsDropped makes a Get whose combined read (store.ReadOrLease) took the
	// lease and failed to load the row drop the error and miss again, loading the row a
	// second time, as Get did before that was fixed. It shows that the test of the fix
	// can fail.
	FillErrorsDropped bool
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

// runRead runs the hook of ctx's Read hooks that pick chooses, if any.
func runRead(ctx context.Context, key string, pick func(*Read) func(string)) {
	if h := read(ctx); h != nil {
		if f := pick(h); f != nil {
			f(key)
		}
	}
}

// Joined runs ctx's Joined hook, if any.
func Joined(ctx context.Context, key string) {
	runRead(ctx, key, func(h *Read) func(string) { return h.Joined })
}

// BeforeLoad runs ctx's BeforeLoad hook, if any.
func BeforeLoad(ctx context.Context, key string) {
	runRead(ctx, key, func(h *Read) func(string) { return h.BeforeLoad })
}

// AfterLoad runs ctx's AfterLoad hook, if any.
func AfterLoad(ctx context.Context, key string) {
	runRead(ctx, key, func(h *Read) func(string) { return h.AfterLoad })
}

// AfterCommit runs ctx's AfterCommit hook, if any.
func AfterCommit(ctx context.Context, key string) {
	runRead(ctx, key, func(h *Read) func(string) { return h.AfterCommit })
}

// BeforeNearStore runs ctx's BeforeNearStore hook, if any.
func BeforeNearStore(ctx context.Context, key string) {
	runRead(ctx, key, func(h *Read) func(string) { return h.BeforeNearStore })
}

// Batched runs ctx's Batched hook, if any.
func Batched(ctx context.Context, key string) {
	runRead(ctx, key, func(h *Read) func(string) { return h.Batched })
}

// JoinedGet runs ctx's JoinedGet hook, if any.
func JoinedGet(ctx context.Context, key string) {
	runRead(ctx, key, func(h *Read) func(string) { return h.JoinedGet })
}

// UnorderedGets reports whether ctx lets Gets take any GET of their key under way.
func UnorderedGets(ctx context.Context) bool {
	h := read(ctx)
	return h != nil && h.UnorderedGets
}

// NearUnfenced reports whether ctx asks for unfenced near-tier stores.
func NearUnfenced(ctx context.Context) bool {
	h := read(ctx)
	return h != nil && h.NearUnfenced
}

// Unfenced reports whether ctx asks for unfenced fills.
func Unfenced(ctx context.Context) bool {
	h := read(ctx)
	return h != nil && h.Unfenced
}

// Unchecked reports whether ctx asks lookups not to check the rows they return.
func Unchecked(ctx context.Context) bool {
	h := read(ctx)
	return h != nil && h.Unchecked
}

// Near holds the hooks of a readthrough.Cache's near tier. They apply to a Cache whose
// *gorm.DB, given to New, carries a context from WithNear (db.WithContext).
type Near struct {
	// KeepOnDown leaves the near tier up and full when its tracking connection fails,
	// as a near cache that trusts every message to arrive does, to show that the
	// tests of the tracking connection's faults can fail.
	KeepOnDown bool
	// FixedMasters keeps tracking a Redis Cluster's first set of masters whatever the
	// topology becomes, as a near cache that does not follow the Cluster does, to show
	// that the test of a master joining can fail.
	FixedMasters bool
}

type nearKey struct{}

// WithNear returns a context carrying h.
func WithNear(ctx context.Context, h *Near) context.Context {
	return context.WithValue(ctx, nearKey{}, h)
}

// NearKeepOnDown reports whether ctx asks the near tier to stay up when tracking fails.
func NearKeepOnDown(ctx context.Context) bool {
	h, _ := ctx.Value(nearKey{}).(*Near)
	return h != nil && h.KeepOnDown
}

// NearFixedMasters reports whether ctx asks a Cluster's tracking not to follow the
// topology.
func NearFixedMasters(ctx context.Context) bool {
	h, _ := ctx.Value(nearKey{}).(*Near)
	return h != nil && h.FixedMasters
}

// Flush holds the hooks of a write-back flusher. Each may be nil. They run for a
// flusher whose Run was given a context from WithFlush.
type Flush struct {
	// AfterRead runs after entries were read or claimed; held is the batch so far.
	AfterRead func(held int)
	// BeforeApply runs after a batch was decoded, before its transaction (which takes
	// its rows' locks and then checks their versions).
	BeforeApply func()
	// AfterSort runs inside a batch's transaction (or a row's, when a batch is applied
	// row by row), after its writes were sorted out by their rows' state, before its
	// statements.
	AfterSort func()
	// BeforeCommit runs inside a batch's transaction, after its statements ran and its
	// versions matched, before the commit.
	BeforeCommit func()
	// AfterCommit runs after a batch committed, before its pending records are cleared.
	AfterCommit func()
	// BeforeSettle runs before a batch's dead letters are written and its pending
	// records cleared, after the batch before it was settled. The next batch's
	// transaction may run meanwhile.
	BeforeSettle func()
	// FailSettle, if it returns an error, fails the settling of the batch it runs for
	// (before its dead letters, pending records and acknowledgements) as a Redis
	// failure would.
	FailSettle func() error
	// ClearAny makes the flusher clear the pending records of a batch's rows whatever
	// write they hold, by reading each record's version just before the clear and
	// clearing that one: it shows that the test of a batch settled while the next is
	// applied can fail.
	ClearAny bool
	// AfterClear runs after the pending records were cleared, before the entries are
	// acknowledged.
	AfterClear func()
	// AssumeLanded makes the flusher take every journal entry whose row's pending
	// record does not hold it for superseded, as it did before writes landed in two
	// steps, instead of waiting for the write to land: it shows that the test of that
	// wait can fail.
	AssumeLanded bool
	// FailBatch, if it returns an error, fails the batch it runs for (at the start of
	// its flush, before anything is applied) as a Redis failure would.
	FailBatch func() error
	// ForgetFailed makes the flusher, after a failed batch, go on with the batch it read
	// meanwhile instead of reading its own entries again: the failed batch's entries
	// wait for another flusher's claim (ClaimAfter). It shows that the test of that
	// read can fail.
	ForgetFailed bool
	// NoRecheck makes the flusher check a batch's versions before its transaction
	// (before BeforeApply), as it once did first, and commit without checking them in
	// the transaction, holding the rows' locks: it shows that the test of that check
	// can fail.
	NoRecheck bool
	// UncappedBlock makes the flusher's blocking reads of the journal wait as long as
	// the batch allows (up to FlushInterval), as they once did, rather than at most a
	// quarter of a second: it shows that the test of Run's prompt return can fail.
	UncappedBlock bool
	// NoReadAhead makes the flusher wait for the batch it applies, settled
	// (acknowledged), before it reads again, so that entries journaled meanwhile go to
	// another flusher of the group.
	NoReadAhead bool
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

// CDC holds the hooks of a change stream. They apply to a cdc.Stream (or an
// invalidator.Worker) whose Run was given a context from WithCDC.
type CDC struct {
	// SkipVisibility hands transactions to the handler as soon as their commit is
	// decoded, without waiting until new snapshots see them, as the stream once did,
	// to show that the test of that wait can fail.
	SkipVisibility bool
	// Invisible, if not nil, runs when the stream finds the transaction xid of a batch
	// committed but not yet visible, before it waits; once per query that found it so.
	Invisible func(xid uint32)
	// SnapshotLogged, if not nil, runs when the stream has logged a running-transactions
	// record ending at lsn (cdc/snapshots.go).
	SnapshotLogged func(lsn uint64)
	// NoLinger: a stopping stream does not wait for the server to pass that record, as
	// before it did, to show that the test of the wait can fail.
	NoLinger bool
	// Dialled, if not nil, runs with each socket the stream dials for replication, once
	// its receive buffer is set (cdc/recvbuf.go).
	Dialled func(net.Conn)
}

type cdcKey struct{}

// WithCDC returns a context carrying h.
func WithCDC(ctx context.Context, h *CDC) context.Context {
	return context.WithValue(ctx, cdcKey{}, h)
}

func cdcFrom(ctx context.Context) *CDC {
	h, _ := ctx.Value(cdcKey{}).(*CDC)
	return h
}

// SkipVisibility reports whether ctx asks the stream not to wait for visibility.
func SkipVisibility(ctx context.Context) bool {
	h := cdcFrom(ctx)
	return h != nil && h.SkipVisibility
}

// Invisible runs ctx's Invisible hook, if any.
func Invisible(ctx context.Context, xid uint32) {
	if h := cdcFrom(ctx); h != nil && h.Invisible != nil {
		h.Invisible(xid)
	}
}

// SnapshotLogged runs ctx's SnapshotLogged hook, if any.
func SnapshotLogged(ctx context.Context, lsn uint64) {
	if h := cdcFrom(ctx); h != nil && h.SnapshotLogged != nil {
		h.SnapshotLogged(lsn)
	}
}

// NoLinger reports ctx's NoLinger.
func NoLinger(ctx context.Context) bool {
	h := cdcFrom(ctx)
	return h != nil && h.NoLinger
}

// Dialled runs ctx's Dialled hook, if any.
func Dialled(ctx context.Context, c net.Conn) {
	if h := cdcFrom(ctx); h != nil && h.Dialled != nil {
		h.Dialled(c)
	}
}

// Run runs f, if it is not nil.
func Run(f func()) {
	if f != nil {
		f()
	}
}

// UnboundedBatches reports whether ctx's Read hooks bound batched reads by the
// client's timeouts instead of RedisTimeout.
func UnboundedBatches(ctx context.Context) bool {
	h := read(ctx)
	return h != nil && h.UnboundedBatches
}

// Unshared reports whether ctx's Read hooks turn off the sharing of Redis reads.
func Unshared(ctx context.Context) bool {
	h := read(ctx)
	return h != nil && h.Unshared
}

// FillErrorsDropped reports whether ctx's Read hooks drop the load error of a combined
// read's fill.
func FillErrorsDropped(ctx context.Context) bool {
	h := read(ctx)
	return h != nil && h.FillErrorsDropped
}
