package cdc

import "net"

// The replication connection's receive buffer (Options.ReceiveBuffer). The walsender
// sends every change as a message of its own and hands it to the kernel at once, a
// send() per change. With the receive buffer the kernel sizes by itself (it grows to
// megabytes), the connection's window stays open, so each change can leave as a TCP
// segment of its own, and both ends pay a trip through the network stack for it. With
// a buffer of some tens of KB the window closes while the receiver reads lazily
// (lazyread.go): the walsender's sends then only append to its socket's queue, and the
// kernel sends what gathered in large segments once the receiver has read.
//
// Whether that pays depends on the rows. Measured on 2 vCPUs with Postgres in a
// container on the same host: with narrow rows (an id and a short name;
// BenchmarkThroughput) 32 KiB doubled the changes a second, a backlog of small
// transactions 62–80k → 100–196k, one 200,000-row UPDATE 72–95k → 150–224k, and halved
// the worker's CPU per change; with rows of some 200 bytes (the benchmark program's) it
// did worse than the kernel's sizing (one UPDATE 94–98k against 116–145k, a backlog
// 34–53k against 54–117k), and 16 KiB worse still. So the kernel's sizing is the
// default, and the option is for a worker whose rows and machine were measured. A
// window also caps a connection at window / round trip: 32 KiB is 32 MB/s at 1ms.

// setReceiveBuffer sets c's receive buffer (SO_RCVBUF) to Options.ReceiveBuffer, when
// that is positive and c is a TCP connection (a Unix socket has no window).
func (s *Stream) setReceiveBuffer(c net.Conn) {
	n := s.opts.ReceiveBuffer
	tc, ok := c.(*net.TCPConn)
	if n <= 0 || !ok {
		return
	}
	if err := tc.SetReadBuffer(n); err != nil {
		s.log.Warn("cdc: cannot set the replication connection's receive buffer; the kernel's stays", "bytes", n, "err", err)
		return
	}
	s.log.Info("cdc: the replication connection's receive buffer is set", "bytes", n)
}
