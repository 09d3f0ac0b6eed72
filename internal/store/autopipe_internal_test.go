package store

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestAutoPipeEnter: a Get that entered the gate alone is sent alone; one that found
// another read under way takes the client's pipeliner, the same one each time; after
// close, or with a closed client, every Get is sent alone. No server is needed: the
// pipeliner connects only when it sends.
func TestAutoPipeEnter(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	s := New(c, time.Second, "t").WithBreaker(5, time.Second).WithAutoPipeline(false)
	p1, _ := s.gate.enter()
	if ap := s.batched(p1); ap != nil {
		t.Fatal("a lone Get took the pipeliner")
	}
	p2, _ := s.gate.enter()
	first := s.batched(p2)
	if first == nil {
		t.Fatal("a Get with another under way was sent alone")
	}
	p3, _ := s.gate.enter()
	if ap := s.batched(p3); ap != first {
		t.Fatalf("a third Get took pipeliner %p, want %p", ap, first)
	}
	for _, p := range []pass{p1, p2, p3} {
		_ = s.gate.leave(context.Background(), p, nil)
	}
	if p, _ := s.gate.enter(); s.batched(p) != nil {
		t.Fatal("a Get after the others left took the pipeliner")
	}
	s.Close()
	if p, _ := s.gate.enter(); s.batched(p) != nil {
		t.Fatal("a Get with another under way took the pipeliner after Close")
	}

	closed := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	closed.Close()
	if newAutoPipe(closed).pipeliner() != nil {
		t.Fatal("a closed client gave a pipeliner")
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cc.Close()
	if newAutoPipe(cc) != nil {
		t.Fatal("a Cluster client batches")
	}
}

// TestDeadlines: a batched Get waits until a deadline between the timeout and 1.25
// times it from when it asked, shared with the Gets that ask soon after; a caller's
// sooner deadline is kept; the control waits with the caller's context alone.
func TestDeadlines(t *testing.T) {
	const timeout = time.Hour // no deadline passes during the test
	w := &deadlines{timeout: timeout}
	bg := context.Background()
	before := time.Now()
	c1 := w.ctx(bg)
	dl, ok := c1.Deadline()
	if !ok || dl.Before(before.Add(timeout)) || dl.After(time.Now().Add(timeout+timeout/4)) {
		t.Fatalf("deadline %v (%v), want between %v and %v from now", dl, ok, timeout, timeout+timeout/4)
	}
	if c2 := w.ctx(bg); c2 != c1 {
		t.Fatal("a second Get right after the first took another deadline")
	}
	soon, cancel := context.WithTimeout(bg, time.Minute)
	defer cancel()
	if c := w.ctx(soon); c != soon {
		t.Fatal("a caller's sooner deadline was not kept")
	}
	later, cancel2 := context.WithTimeout(bg, 2*timeout)
	defer cancel2()
	if c := w.ctx(later); c != c1 {
		t.Fatal("a caller's later deadline replaced the shared one")
	}
	if c := (&deadlines{timeout: timeout, unbounded: true}).ctx(bg); c != bg {
		t.Fatal("unbounded: the wait is not the caller's context alone")
	}
	// Once the shared deadline is less than the timeout away, the next Get takes a new one.
	w.cur.Load().at = time.Now().Add(timeout / 2)
	if c := w.ctx(bg); c == c1 {
		t.Fatal("a deadline less than the timeout away was shared")
	}
}
