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
// until it succeeds within PurgeTimeout.
func TestPurgeBatchesAndRetries(t *testing.T) {
	p := &flakyPurger{fails: 2}
	pg := newPurging(Options{Purger: p, PurgeTimeout: time.Minute})
	tags := make([]string, purgeBatch+10)
	for i := range tags {
		tags[i] = fmt.Sprint("pgc-", i)
	}
	pg.purge(context.Background(), tags)
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

// TestPurgeBound: a purger that never returns is given up on, counted, and purge
// returns (the test would hang otherwise); a purger that always fails is counted too.
func TestPurgeBound(t *testing.T) {
	p := hangingPurger{release: make(chan struct{})}
	defer close(p.release)
	pg := newPurging(Options{Purger: p, PurgeTimeout: 50 * time.Millisecond})
	pg.purge(context.Background(), []string{"pgc-a"})
	if pg.purgeErrors.Load() != 1 || pg.purged.Load() != 0 {
		t.Errorf("hanging purger: purged %d, errors %d", pg.purged.Load(), pg.purgeErrors.Load())
	}
	failing := newPurging(Options{Purger: &flakyPurger{fails: 1 << 30}, PurgeTimeout: 50 * time.Millisecond})
	failing.purge(context.Background(), []string{"pgc-a"})
	if failing.purgeErrors.Load() != 1 {
		t.Errorf("failing purger: errors %d", failing.purgeErrors.Load())
	}
	none := newPurging(Options{})
	none.purge(context.Background(), []string{"pgc-a"}) // no purger: nothing to do
}
