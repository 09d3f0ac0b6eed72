package store

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestAutoPipeEnter: a lone Get is sent alone; one that finds another under way takes
// the client's pipeliner, the same one each time; after close, or with a closed
// client, every Get is sent alone. No server is needed: the pipeliner connects only
// when it sends.
func TestAutoPipeEnter(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	a := newAutoPipe(c, false)
	if ap := a.enter(); ap != nil {
		t.Fatal("a lone Get took the pipeliner")
	}
	first := a.enter()
	if first == nil {
		t.Fatal("a Get with another under way was sent alone")
	}
	if ap := a.enter(); ap != first {
		t.Fatalf("a third Get took pipeliner %p, want %p", ap, first)
	}
	a.leave()
	a.leave()
	a.leave()
	if ap := a.enter(); ap != nil {
		t.Fatal("a Get after the others left took the pipeliner")
	}
	a.close()
	if ap := a.enter(); ap != nil {
		t.Fatal("a Get with another under way took the pipeliner after close")
	}
	a.leave()
	a.leave()

	closed := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	closed.Close()
	b := newAutoPipe(closed, false)
	b.enter()
	if ap := b.enter(); ap != nil {
		t.Fatal("a closed client gave a pipeliner")
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cc.Close()
	if newAutoPipe(cc, false) != nil {
		t.Fatal("a Cluster client batches")
	}
}
