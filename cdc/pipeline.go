package cdc

import (
	"context"
	"sync"
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
	return &pipeline{confirmed: confirmed, ready: make(chan struct{}, 1), room: make(chan struct{}, 1)}
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
	signal(p.ready)
	return true
}

// take removes and returns every queued transaction, waiting until there is one or
// ctx is done. The slice is the caller's.
func (p *pipeline) take(ctx context.Context) ([]*Tx, error) {
	for {
		p.mu.Lock()
		txs := p.queue
		if len(txs) > 0 {
			p.queue, p.changes, p.rowBytes = nil, 0, 0
			signal(p.room)
		}
		p.mu.Unlock()
		if len(txs) > 0 {
			return txs, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.ready:
		}
	}
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

// pendingCount returns the number of transactions received and not yet handled.
func (p *pipeline) pendingCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending
}

// position returns the confirmed position: the end of the last transaction handled,
// or a later idle keepalive's WAL end.
func (p *pipeline) position() LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.confirmed
}
