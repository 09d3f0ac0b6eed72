package cdc

import (
	"net"
	"time"
)

// The replication connection's receive buffer. The walsender sends every change as a
// message of its own and hands it to the kernel at once: a send() per change. With the
// receive buffer the kernel sizes by itself (it grows to megabytes), the connection's
// window never closes, so each change leaves as a TCP segment of its own, and both ends
// pay a trip through the network stack and a wake-up for it: on 2 vCPUs that, not
// decoding, bounded the stream at 60–90k changes a second. With a buffer of some tens of
// KB the window closes while the receiver reads lazily (lazyread.go); the walsender's
// sends then only append to its socket's queue, and the kernel sends what gathered in
// large segments each time the receiver has read. Measured (BenchmarkThroughput, 2
// vCPUs, the servers in containers on the same host): a backlog of small transactions
// 62–80k → 100–196k changes a second, one UPDATE of 200,000 rows 72–90k → 150–220k, the
// worker's CPU per change halved. Single-row commits at 1,000 a second, which never fill
// the window, showed no change of lag.
//
// A window caps a connection at window / round trip: 32 KB is 32 MB/s, some 300,000
// changes a second, at 1ms. So the buffer is set only when the TCP connect took under
// nearConnect (a worker beside its Postgres); a farther server keeps the kernel's
// sizing, unless Options.ReceiveBuffer says otherwise.
const (
	nearReceiveBuffer = 32 << 10
	nearConnect       = time.Millisecond
)

// receiveBuffer returns the receive buffer to ask for on the replication socket, given
// Options.ReceiveBuffer and how long its TCP connect took; 0 leaves the kernel's.
func receiveBuffer(opt int, connect time.Duration) int {
	switch {
	case opt > 0:
		return opt
	case opt < 0 || connect >= nearConnect:
		return 0
	}
	return nearReceiveBuffer
}

// setReceiveBuffer sets c's receive buffer (SO_RCVBUF) as receiveBuffer says, if c is
// a TCP connection (a Unix socket has no window).
func (s *Stream) setReceiveBuffer(c net.Conn, connect time.Duration) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	n := receiveBuffer(s.opts.ReceiveBuffer, connect)
	if n == 0 {
		return
	}
	if err := tc.SetReadBuffer(n); err != nil {
		s.log.Warn("cdc: cannot set the replication connection's receive buffer; the kernel's stays", "bytes", n, "err", err)
	}
}
