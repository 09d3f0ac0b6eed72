package cdc

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// A session runs two goroutines: one receives and decodes the stream, the other hands
// the transactions to the Handler. A pipeline is what they share: the transactions
// received and not yet taken by the handler, and the position confirmed so far. It
// lives for one session.
//
// Memory stays bounded: the queue takes a transaction only while it holds fewer than
// maxQueuedTxs transactions and the transaction's changes fit within maxQueuedChanges
// and their rows' values within maxQueuedRowBytes (an empty queue takes one of any size, which the decoder had to hold whole anyway),
// and the handler takes the whole queue at once. So a session holds at most twice those
// bounds, plus the transaction being decoded or waiting for room.
type pipeline struct {
	mu        sync.Mutex
	queue     []*Tx // received, not yet taken by the handler, in commit order
	changes   int   // changes in queue
	rowBytes  int   // bytes of the row values the changes in queue keep
	pending   int   // received and not yet handled: queue and the batch being handled
	confirmed LSN

	// Each holds a token when the other side may have something for its owner: ready
	// for the handler (the queue is not empty), room for the receiver (the handler
	// took the queue). A token can be stale; whoever takes one checks again.
	ready chan struct{}
	room  chan struct{}

	// past: the position is to be reported as soon as it reaches this LSN; 0 when
	// nothing asks (reportPast).
	past atomic.Uint64

	// serverEnd: the server's WAL end as last read, by either goroutine: the
	// receiver is behind while it decodes what committed well before it (see
	// lazyread.go).
	serverEnd atomic.Uint64
	// gatherWait: see take; a test sets it longer.
	gatherWait time.Duration
	// gathered: while take gathers a backlog, the changes it holds; -1 otherwise. put
	// wakes it only when what it holds and the queue reach gatherChanges, or a
	// transaction that is not behind arrives, rather than for every transaction.
	gathered int
}

const (
	// maxQueuedTxs and maxQueuedChanges bound the queue. They are large enough for the
	// receiver to keep going while the handler works through a full queue (at 100,000
	// changes a second, a full queue is two thirds of a second of work), and small
	// enough to cost some tens of megabytes at most.
	maxQueuedTxs     = 4096
	maxQueuedChanges = 65536
	// maxQueuedRowBytes bounds the row values (Change.New and Old) of the queue.
	maxQueuedRowBytes = 32 << 20
)

func newPipeline(confirmed LSN) *pipeline {
	return &pipeline{confirmed: confirmed, ready: make(chan struct{}, 1), room: make(chan struct{}, 1), gatherWait: gatherWait, gathered: -1}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// put appends tx to the queue if there is room, and reports whether there was.
func (p *pipeline) put(tx *Tx) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.queue); n > 0 && (n >= maxQueuedTxs || p.changes+len(tx.Changes) > maxQueuedChanges ||
		p.rowBytes+tx.rowBytes > maxQueuedRowBytes) {
		return false
	}
	p.queue = append(p.queue, tx)
	p.changes += len(tx.Changes)
	p.rowBytes += tx.rowBytes
	p.pending++
	if p.gathered < 0 || p.gathered+p.changes >= gatherChanges || len(p.queue) >= maxQueuedTxs || !p.behind(tx.EndLSN) {
		signal(p.ready)
	}
	return true
}

// take removes and returns every queued transaction, waiting until there is one or
// ctx is done. The slice is the caller's.
//
// While the stream is behind, it goes on taking what the receiver queues for up to
// p.gatherWait, until it holds gatherChanges changes: a backlog of small transactions,
// which the receiver decodes faster than the handler handles them one at a time, then
// costs the handler (and the servers it asks) a round trip per thousands of changes
// rather than per transaction. What is behind is no fresher for being handed over a
// few milliseconds sooner.
func (p *pipeline) take(ctx context.Context) ([]*Tx, error) {
	var txs []*Tx
	changes := 0
	var timeout <-chan time.Time
	for {
		txs, changes = p.takeQueued(txs, changes)
		if len(txs) > 0 {
			if changes >= gatherChanges || !p.behind(txs[len(txs)-1].EndLSN) {
				return txs, nil
			}
			if timeout == nil {
				t := time.NewTimer(p.gatherWait)
				defer t.Stop()
				defer p.gather(-1)
				timeout = t.C
			}
			p.gather(changes)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timeout:
			txs, _ = p.takeQueued(txs, changes)
			return txs, nil
		case <-p.ready:
		}
	}
}

const (
	// gatherWait is how long take waits for more transactions while the stream is
	// behind: at 100,000 changes a second, some thousand changes. gatherChanges ends
	// the wait sooner; both are well within the queue's bounds.
	gatherWait    = 10 * time.Millisecond
	gatherChanges = 8192
)

// gather records the changes take holds while it gathers, or -1 once it stopped.
func (p *pipeline) gather(changes int) {
	p.mu.Lock()
	p.gathered = changes
	p.mu.Unlock()
}

// takeQueued removes every queued transaction and returns them appended to txs, and
// changes plus the number of their changes.
func (p *pipeline) takeQueued(txs []*Tx, changes int) ([]*Tx, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		return txs, changes
	}
	if txs == nil {
		txs = p.queue
	} else {
		txs = append(txs, p.queue...)
	}
	changes += p.changes
	p.queue, p.changes, p.rowBytes = nil, 0, 0
	signal(p.room)
	return txs, changes
}

// handled records that the handler is done with n transactions it took, the last of
// which ends at end, and returns the confirmed position.
func (p *pipeline) handled(n int, end LSN) LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending -= n
	p.confirmed = max(p.confirmed, end)
	return p.confirmed
}

// idle confirms walEnd, the WAL end of a keepalive received outside a transaction, if
// every transaction received has been handled, and returns the confirmed position.
// Only the receiver adds transactions and calls idle, so none can arrive in between.
func (p *pipeline) idle(walEnd LSN) LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending == 0 {
		p.confirmed = max(p.confirmed, walEnd)
	}
	return p.confirmed
}

// sawServerEnd records end, a WAL end the server reported.
func (p *pipeline) sawServerEnd(end LSN) {
	for {
		old := p.serverEnd.Load()
		if uint64(end) <= old || p.serverEnd.CompareAndSwap(old, uint64(end)) {
			return
		}
	}
}

// behind reports whether what committed at pos is more than backlogSlack bytes of WAL
// behind the server's WAL end as last read.
func (p *pipeline) behind(pos LSN) bool {
	return pos > 0 && uint64(pos)+backlogSlack < p.serverEnd.Load()
}

// pendingCount returns the number of transactions received and not yet handled.
func (p *pipeline) pendingCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending
}

// reportPast has the receiver report the position as soon as it reaches lsn (a
// running-transactions record the stream logged: see snapshots.go).
func (p *pipeline) reportPast(lsn LSN) { p.past.Store(uint64(lsn)) }

// reportAsked says whether the LSN given to reportPast is still to be reported.
func (p *pipeline) reportAsked() bool { return p.past.Load() != 0 }

// reportDue says, once, that the position reached the LSN given to reportPast.
func (p *pipeline) reportDue() bool {
	lsn := p.past.Load()
	if lsn == 0 || p.position() < LSN(lsn) {
		return false
	}
	return p.past.CompareAndSwap(lsn, 0)
}

// position returns the confirmed position: the end of the last transaction handled,
// or a later idle keepalive's WAL end.
func (p *pipeline) position() LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.confirmed
}
