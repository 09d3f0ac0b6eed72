package cdc

import (
	"net"
	"sync/atomic"
	"time"
)

// While a large transaction streams in, the receiver is faster than the walsender: each
// read of the socket returns the one message that has just arrived, and costs a system
// call and a wake-up of the receiving goroutine per change, on the CPUs the walsender
// needs. Nobody waits for the changes of a transaction before its commit, so within one
// the receiver lets the kernel gather them: a read that follows a short read (the
// kernel had nothing more) waits lazyReadWait first, and takes then all that arrived
// meanwhile. Outside a transaction, and in its first lazyAfterChanges changes (small
// transactions, whose commit the lag depends on), every read is immediate, unless the
// stream is behind: while it decodes transactions that committed more than
// backlogSlack bytes of WAL before the server's WAL end (as read at the start of the
// session and with every look at the server's snapshot), no reader waits for them yet,
// and a backlog of small transactions is received as a large one is, with longer
// waits (backlogReadWait) and reads of up to readBuffer bytes: a read per some hundred
// changes rather than per few.
//
// Each wait and read costs the worker's process a wake-up, a system call and the
// scheduler's look for other work, which a profile of the backlog showed to be most of
// its CPU, beside decoding and deleting. The waits are as long as the kernel's socket
// buffer can hold what the walsender sends meanwhile (at 100,000 changes a second of
// some hundred bytes each, 4ms is 400 changes, some tens of KB, of a buffer the kernel
// grows to megabytes), and a read that fills half of readBuffer is followed by one at
// once. The wait after a large transaction's commit arrived is at most lazyReadWait:
// the latency a transaction of more than lazyAfterChanges changes may gain.
const (
	lazyAfterChanges = 256
	lazyReadWait     = time.Millisecond
	backlogReadWait  = 4 * time.Millisecond
	readBuffer       = 256 << 10
	// backlogSlack: some seconds of WAL at the rate of single-row commits that
	// invalidation keeps up with, so that a stream that keeps up is never taken for
	// one that is behind; a backlog of small transactions is many times that.
	backlogSlack = 1 << 20
)

// lazyConn is the replication connection's socket, whose reads wait while wait is set
// and the previous read came back short.
type lazyConn struct {
	net.Conn
	// wait: how long a read after a short one waits, set by the receiver while it
	// decodes a large transaction or a backlog; 0 outside them.
	wait  atomic.Int64
	short atomic.Bool // the last read filled less than half of its buffer
	waits atomic.Uint64
}

// setWait sets how long a read after a short one waits.
func (c *lazyConn) setWait(d time.Duration) { c.wait.Store(int64(d)) }

func (c *lazyConn) Read(p []byte) (int, error) {
	if d := time.Duration(c.wait.Load()); d > 0 && c.short.Load() {
		c.waits.Add(1)
		time.Sleep(d)
	}
	n, err := c.Conn.Read(p)
	c.short.Store(n < len(p)/2)
	return n, err
}
