package invalidator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// flakyPurger fails its first fails calls, then records its batches.
type flakyPurger struct {
	mu      sync.Mutex
	fails   int
	batches [][]string
}

func (p *flakyPurger) Purge(_ context.Context, tags []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fails > 0 {
		p.fails--
		return errors.New("cdn down")
	}
	p.batches = append(p.batches, tags)
	return nil
}

// TestPurgeBatchesAndRetries: tags go in batches of at most purgeBatch, each retried
// until it succeeds within PurgeTimeout; none is left for the purge stream.
func TestPurgeBatchesAndRetries(t *testing.T) {
	p := &flakyPurger{fails: 2}
	pg := newPurging(Options{Purger: p, PurgeTimeout: time.Minute}, nil)
	tags := make([]string, purgeBatch+10)
	for i := range tags {
		tags[i] = fmt.Sprint("pgc-", i)
	}
	if left := pg.purgeNow(context.Background(), tags); len(left) != 0 {
		t.Errorf("%d tags left unpurged", len(left))
	}
	if len(p.batches) != 2 || len(p.batches[0]) != purgeBatch || len(p.batches[1]) != 10 {
		t.Fatalf("batches of %v", lens(p.batches))
	}
	if pg.purged.Load() != uint64(len(tags)) || pg.purgeErrors.Load() != 0 {
		t.Errorf("purged %d, errors %d", pg.purged.Load(), pg.purgeErrors.Load())
	}
}

func lens(bs [][]string) []int {
	var n []int
	for _, b := range bs {
		n = append(n, len(b))
	}
	return n
}

// hangingPurger ignores its context and never returns until released.
type hangingPurger struct{ release chan struct{} }

func (p hangingPurger) Purge(context.Context, []string) error {
	<-p.release
	return nil
}

// TestPurgeBound: a purger that never returns is given up on, counted, and purgeNow
// returns every tag as left to purge (the test would hang otherwise); a purger that
// always fails is counted too.
func TestPurgeBound(t *testing.T) {
	p := hangingPurger{release: make(chan struct{})}
	defer close(p.release)
	pg := newPurging(Options{Purger: p, PurgeTimeout: 50 * time.Millisecond}, nil)
	left := pg.purgeNow(context.Background(), []string{"pgc-a"})
	if pg.purgeErrors.Load() != 1 || pg.purged.Load() != 0 || len(left) != 1 {
		t.Errorf("hanging purger: purged %d, errors %d", pg.purged.Load(), pg.purgeErrors.Load())
	}
	failing := newPurging(Options{Purger: &flakyPurger{fails: 1 << 30}, PurgeTimeout: 50 * time.Millisecond}, nil)
	left = failing.purgeNow(context.Background(), []string{"pgc-a", "pgc-b"})
	if failing.purgeErrors.Load() != 1 || len(left) != 2 {
		t.Errorf("failing purger: errors %d, %d tags left", failing.purgeErrors.Load(), len(left))
	}
}

// TestRepurgeAfterOption: RepurgeAfter defaults to defaultRepurgeAfter; negative is off.
func TestRepurgeAfterOption(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{0: defaultRepurgeAfter, -1: 0, time.Second: time.Second} {
		if got := newPurging(Options{RepurgeAfter: in}, nil).repurge; got != want {
			t.Errorf("RepurgeAfter %v: %v, want %v", in, got, want)
		}
	}
}
