package near

import (
	"testing"
	"time"
)

func newCache(t *testing.T, o Options) (*Tier, *Cache[string]) {
	t.Helper()
	tier := NewTier()
	c, err := New[string](tier, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return tier, c
}

func TestDownIsBypassed(t *testing.T) {
	tier, c := newCache(t, Options{MaxEntries: 10})
	if c.Store(tier.Ticket("k"), "k", "v", 1, time.Minute) {
		t.Fatal("stored while tracking is down")
	}
	tier.Up()
	if !c.Store(tier.Ticket("k"), "k", "v", 1, time.Minute) {
		t.Fatal("store refused while up, with a fresh ticket")
	}
	if v, ok := c.Get("k"); !ok || v != "v" {
		t.Fatalf("Get = %q, %v; want v, true", v, ok)
	}
	tier.Down()
	if _, ok := c.Get("k"); ok {
		t.Fatal("served while down")
	}
	tier.Up()
	if _, ok := c.Get("k"); ok {
		t.Fatal("served an entry stored before the tier went down")
	}
	if got := tier.Stats().Flushes; got != 1 {
		t.Fatalf("Flushes = %d, want 1", got)
	}
}

func TestTicketVoidedByInvalidation(t *testing.T) {
	tier, c := newCache(t, Options{MaxEntries: 10})
	tier.Up()
	tk := tier.Ticket("k")
	tier.Invalidate("k") // arrives between the GET's reply and the store
	if c.Store(tk, "k", "old", 1, time.Minute) {
		t.Fatal("stored a reply older than an invalidation received since its ticket")
	}
	tk = tier.Ticket("k")
	tier.Drop("k") // a local write
	if c.Store(tk, "k", "old", 1, time.Minute) {
		t.Fatal("stored a reply older than a local write")
	}
	tk = tier.Ticket("k")
	tier.Flush()
	if c.Store(tk, "k", "old", 1, time.Minute) {
		t.Fatal("stored a reply older than a flush")
	}
	if !c.Store(tier.Ticket("k"), "k", "new", 1, time.Minute) {
		t.Fatal("fresh ticket refused")
	}
	tier.Invalidate("k")
	if _, ok := c.Get("k"); ok {
		t.Fatal("served an invalidated key")
	}
	if got := tier.Stats().Invalidations; got != 2 {
		t.Fatalf("Invalidations = %d, want 2", got)
	}
}

func TestFlushKeepsUp(t *testing.T) {
	tier, c := newCache(t, Options{MaxBytes: 1 << 20})
	tier.Up()
	c.Store(tier.Ticket("k"), "k", "v", 10, time.Minute)
	tier.Flush()
	if _, ok := c.Get("k"); ok {
		t.Fatal("served after a flush")
	}
	if !tier.IsUp() || !c.Store(tier.Ticket("k"), "k", "v", 10, time.Minute) {
		t.Fatal("a flush took the tier down")
	}
	if _, ok := c.Get("k"); !ok {
		t.Fatal("entry stored after the flush not served")
	}
}

func TestExpiry(t *testing.T) {
	tier, c := newCache(t, Options{MaxEntries: 10})
	tier.Up()
	c.Store(tier.Ticket("k"), "k", "v", 1, 20*time.Millisecond)
	time.Sleep(40 * time.Millisecond) // lower bound only: the entry must be gone after its TTL
	if _, ok := c.Get("k"); ok {
		t.Fatal("served past its TTL")
	}
}

func TestBound(t *testing.T) {
	tier, c := newCache(t, Options{MaxEntries: 100})
	tier.Up()
	for i := range 1000 {
		k := string(rune('a'+i%26)) + string(rune(i))
		c.Store(tier.Ticket(k), k, "v", 1, time.Minute)
	}
	c.c.CleanUp()
	if n := c.c.EstimatedSize(); n > 100 {
		t.Fatalf("holds %d entries, bound 100", n)
	}
	if c.Stats().Evictions == 0 {
		t.Fatal("no eviction counted")
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []Options{{}, {MaxEntries: 1, MaxBytes: 1}, {MaxEntries: -1}} {
		if _, err := New[string](NewTier(), o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}
