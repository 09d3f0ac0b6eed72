package cdc_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/testhooks"
)

// rowCounter is a handler that counts row changes and transactions.
type rowCounter struct{ rows, txs atomic.Int64 }

func (c *rowCounter) Gap(context.Context, []string, string) error { return nil }
func (c *rowCounter) Handle(_ context.Context, tx *cdc.Tx) error {
	c.rows.Add(int64(len(tx.Changes)))
	c.txs.Add(1)
	return nil
}

// receiveBufferStream runs a stream of items with Options.ReceiveBuffer set to size,
// counting into h, and returns the receive buffer (SO_RCVBUF, as the kernel reports
// it) of the socket the stream dialled for replication, and the running stream.
func receiveBufferStream(t *testing.T, db *integration.Database, slot string, size int, h cdc.Handler) (rcvbuf int, r *running) {
	t.Helper()
	opts := fastOptions(t, slot, "items")
	opts.ReceiveBuffer = size
	dialled := make(chan int, 4)
	hooks := &testhooks.CDC{Dialled: func(c net.Conn) {
		n := -1
		if raw, err := c.(*net.TCPConn).SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) { n, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF) })
		}
		dialled <- n
	}}
	r = startHooked(t, db.RoleURL, opts, h, hooks)
	r.waitConnected(t)
	return <-dialled, r
}

// stopped stops r and fails on an error other than its context's.
func stopped(t *testing.T, r *running) {
	t.Helper()
	if err := r.stop(t); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v", err)
	}
}

// TestReceiveBuffer: Options.ReceiveBuffer sets the replication socket's receive
// buffer (Linux reports twice the size asked, its bookkeeping included); zero leaves
// the kernel's, which is the control: the reading tells the two apart.
func TestReceiveBuffer(t *testing.T) {
	db := servers.Postgres(t).NewDatabase(t)
	exec(t, connect(t, db.RoleURL), `CREATE TABLE items (id bigint PRIMARY KEY)`)
	const size = 16 << 10
	set, r := receiveBufferStream(t, db, slotName(db, "rcvbuf"), size, new(rowCounter))
	stopped(t, r)
	kernel, _ := receiveBufferStream(t, db, slotName(db, "rcvbuf"), 0, new(rowCounter))
	t.Logf("SO_RCVBUF: %d with ReceiveBuffer %d, %d with the kernel's", set, size, kernel)
	if set != 2*size {
		t.Errorf("SO_RCVBUF %d with ReceiveBuffer %d, want %d", set, size, 2*size)
	}
	if kernel == 2*size {
		t.Errorf("SO_RCVBUF %d with ReceiveBuffer 0: the kernel's sizing should stay", kernel)
	}
}

// TestTinyReceiveBuffer: with a receive buffer of 4 KiB, so small that the window is
// closed most of the time, every change of a large
// transaction streamed live and of a backlog of small ones committed while the stream
// was stopped arrives, and the slot is confirmed past them.
func TestTinyReceiveBuffer(t *testing.T) {
	db := servers.Postgres(t).NewDatabase(t)
	role := connect(t, db.RoleURL)
	exec(t, role, `CREATE TABLE items (id bigint PRIMARY KEY, note text)`)
	slot := slotName(db, "tiny")
	h := new(rowCounter)
	_, r := receiveBufferStream(t, db, slot, 4<<10, h)

	const live = 50000
	exec(t, role, `INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series(1, 50000) g`)
	admin := connect(t, db.URL)
	liveEnd := currentLSN(t, admin)
	waitFor(t, "the live transaction's changes", func() bool { return h.rows.Load() >= live })
	waitFor(t, "the slot to be confirmed past them", func() bool { return confirmedFlush(t, admin, slot) >= liveEnd })
	stopped(t, r)

	const txs, rows = 300, 100
	for i := range txs {
		exec(t, role, fmt.Sprintf(`UPDATE items SET note = 'y' || note WHERE id > %d AND id <= %d`, i*rows, (i+1)*rows))
	}
	end := currentLSN(t, admin)
	h2 := new(rowCounter)
	_, r = receiveBufferStream(t, db, slot, 4<<10, h2)
	waitFor(t, "the backlog's changes", func() bool { return h2.rows.Load() >= txs*rows })
	waitFor(t, "the slot to be confirmed past the backlog", func() bool { return confirmedFlush(t, admin, slot) >= end })
	stopped(t, r)
	if got := h.rows.Load(); got != live {
		t.Errorf("live: %d row changes, want %d", got, live)
	}
	if got, gotTx := h2.rows.Load(), h2.txs.Load(); got != txs*rows || gotTx != txs {
		t.Errorf("backlog: %d row changes in %d transactions, want %d in %d", got, gotTx, txs*rows, txs)
	}
}
