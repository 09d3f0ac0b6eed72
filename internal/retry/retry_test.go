package retry

import (
	"context"
	"testing"
	"time"
)

// TestBackoff checks the bounds of the waits: lo doubled per call, capped at hi, each
// wait in [d/2, d], and Reset starting over from lo.
func TestBackoff(t *testing.T) {
	for _, c := range []struct{ lo, hi time.Duration }{
		{10 * time.Millisecond, time.Second},
		{100 * time.Millisecond, 10 * time.Second},
		{50 * time.Millisecond, 500 * time.Millisecond},
		{2 * time.Second, 2 * time.Second},
	} {
		b := Backoff(c.lo, c.hi)
		for range 50 {
			d := c.lo
			for n := range 12 {
				wait := b.NextBackOff()
				if wait < d/2 || wait > d {
					t.Fatalf("Backoff(%v, %v): wait %d is %v, want within [%v, %v]", c.lo, c.hi, n, wait, d/2, d)
				}
				d = min(2*d, c.hi)
			}
			b.Reset()
		}
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Wait(ctx, Backoff(time.Hour, time.Hour)); err != context.Canceled {
		t.Fatalf("Wait on a cancelled context = %v, want context.Canceled", err)
	}
	if err := Wait(context.Background(), Backoff(time.Millisecond, time.Millisecond)); err != nil {
		t.Fatalf("Wait = %v", err)
	}
}
