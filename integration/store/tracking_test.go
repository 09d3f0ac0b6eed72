package store_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
)

// events records what a tracker reports.
type events struct {
	mu    sync.Mutex
	log   []string
	keys  map[string]int
	ups   int
	downs int
}

func (e *events) handler() store.TrackingHandler {
	return store.TrackingHandler{
		Up:   func() { e.add("up", nil) },
		Down: func(error) { e.add("down", nil) },
		Invalidate: func(ks []string) {
			e.add("invalidate", ks)
		},
		Flush: func() { e.add("flush", nil) },
	}
}

func (e *events) add(what string, ks []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, what)
	switch what {
	case "up":
		e.ups++
	case "down":
		e.downs++
	}
	for _, k := range ks {
		e.keys[k]++
	}
}

func (e *events) seen(what string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, w := range e.log {
		if w == what {
			n++
		}
	}
	return n
}

func (e *events) last() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.log[len(e.log)-1]
}

func (e *events) key(k string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.keys[k]
}

func startTracker(t *testing.T, rdb *redis.Client, prefix string) *events {
	t.Helper()
	ev := &events{keys: map[string]int{}}
	st := store.New(rdb, time.Second, "tracker-test")
	tr, err := st.NewTracker(keys.Prefix(prefix), ev.handler(), 500*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	integration.Eventually(t, "tracking up", func() bool { return ev.seen("up") == 1 })
	return ev
}

// trackingID returns the CLIENT ID of the tracking connection.
func trackingID(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	list, err := rdb.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(list, "\n") {
		if strings.Contains(line, " name="+store.TrackingName+" ") {
			for f := range strings.FieldsSeq(line) {
				if id, ok := strings.CutPrefix(f, "id="); ok {
					return id
				}
			}
		}
	}
	t.Fatalf("no client named %s in CLIENT LIST:\n%s", store.TrackingName, list)
	return ""
}

// TestTrackerReportsChanges: writes, deletes and expiries of keys under the prefix are
// reported, keys under other prefixes are not; FLUSHDB is reported as a flush, and a
// killed connection as down, then up again on a new connection.
func TestTrackerReportsChanges(t *testing.T) {
	rd := integration.NewRedis(t, integration.RedisOptions{}) // FLUSHDB and CLIENT KILL: a server of its own
	rdb := rd.Client(t)
	ctx := context.Background()
	prefix := rd.Prefix(t)
	ev := startTracker(t, rdb, prefix)

	k := prefix + "{t|v|1}:v"
	rdb.Set(ctx, k, "a", 0)
	rdb.Set(ctx, "other{t|v|1}:v", "a", 0)
	integration.Eventually(t, "the SET reported", func() bool { return ev.key(k) == 1 })
	rdb.Del(ctx, k)
	integration.Eventually(t, "the DEL reported", func() bool { return ev.key(k) == 2 })
	rdb.Set(ctx, k, "b", 20*time.Millisecond)
	integration.Eventually(t, "the expiry reported", func() bool { return ev.key(k) == 4 })
	if n := ev.key("other{t|v|1}:v"); n != 0 {
		t.Errorf("a key under another prefix was reported %d times", n)
	}

	downs := ev.seen("down") // each dial reports one, before tracking is on
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "FLUSHDB reported", func() bool { return ev.seen("flush")+ev.seen("down") > downs })
	if ev.seen("flush") != 1 || ev.seen("down") != downs {
		t.Errorf("FLUSHDB: %d flushes, %d more downs; want 1 flush and the connection kept", ev.seen("flush"), ev.seen("down")-downs)
	}

	id := trackingID(t, rdb)
	if err := rdb.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "down, then up again", func() bool { return ev.seen("down") > downs && ev.seen("up") == 2 })
	if last := ev.last(); last != "up" {
		t.Errorf("after the reconnect the last event is %s, want up", last)
	}
	if trackingID(t, rdb) == id {
		t.Error("up again on the killed connection's id")
	}
	rdb.Set(ctx, k, "c", 0)
	integration.Eventually(t, "a SET after the reconnect reported", func() bool { return ev.key(k) == 5 })
}
