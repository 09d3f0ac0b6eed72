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
// transactions, whose commit the lag depends on), every read is immediate.
const (
	lazyAfterChanges = 256
	lazyReadWait     = 200 * time.Microsecond
)

// lazyConn is the replication connection's socket, whose reads wait while lazy is set
// and the previous read came back short.
type lazyConn struct {
	net.Conn
	lazy  atomic.Bool // set by the receiver while it decodes a large transaction
	short atomic.Bool // the last read filled less than half of its buffer
	waits atomic.Uint64
}

func (c *lazyConn) Read(p []byte) (int, error) {
	if c.short.Load() && c.lazy.Load() {
		c.waits.Add(1)
		time.Sleep(lazyReadWait)
	}
	n, err := c.Conn.Read(p)
	c.short.Store(n < len(p)/2)
	return n, err
}
