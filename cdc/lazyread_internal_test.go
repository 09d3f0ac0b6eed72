package cdc

import (
	"net"
	"testing"
)

// TestLazyConn: a read waits only while the receiver is in a large transaction and the
// previous read came back short; every byte written is read, in order, either way.
func TestLazyConn(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	c := &lazyConn{Conn: client}
	read := func(want string) {
		t.Helper()
		go func() { _, _ = server.Write([]byte(want)) }()
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("Read = %q, %v; want %q", buf[:n], err, want)
		}
	}
	read("a") // short
	read("b") // short, not lazy: no wait
	if w := c.waits.Load(); w != 0 {
		t.Fatalf("%d waits outside a large transaction, want 0", w)
	}
	c.setWait(lazyReadWait)
	read("c") // after a short read, lazy: waits
	if w := c.waits.Load(); w != 1 {
		t.Fatalf("%d waits in a large transaction after a short read, want 1", w)
	}
	read("0123456789012345678901234567890123456789") // waits, then a long read
	read("d")                                        // after a long read: no wait
	if w := c.waits.Load(); w != 2 {
		t.Fatalf("%d waits, want 2: none after a read that filled its buffer", w)
	}
	c.setWait(0)
	read("e")
	if w := c.waits.Load(); w != 2 {
		t.Fatalf("%d waits after the transaction, want 2", w)
	}
}
