package writeback

import (
	"testing"
	"time"
)

// TestBackoffBounds: the waits between retries start at RetryBackoff and double up
// to MaxBackoff, each drawn between half of its step and the whole of it.
func TestBackoffBounds(t *testing.T) {
	f := &Flusher{opts: FlusherOptions{RetryBackoff: 50 * time.Millisecond, MaxBackoff: 5 * time.Second}}
	for range 200 {
		bo := f.backoff()
		step := f.opts.RetryBackoff
		for i := range 10 {
			if d := bo.NextBackOff(); d < step/2 || d > step {
				t.Fatalf("wait %d: %v, want between %v and %v", i, d, step/2, step)
			}
			step = min(2*step, f.opts.MaxBackoff)
		}
		bo.Reset()
		if d := bo.NextBackOff(); d < f.opts.RetryBackoff/2 || d > f.opts.RetryBackoff {
			t.Fatalf("wait after Reset: %v, want between %v and %v", d, f.opts.RetryBackoff/2, f.opts.RetryBackoff)
		}
	}
}
