package cdc

import (
	"testing"
	"time"
)

// TestJittered checks the bounds of the reconnect waits: MinBackoff doubled per
// failure, capped at the maximum, each wait in [d/2, d].
func TestJittered(t *testing.T) {
	for _, c := range []struct{ lo, hi time.Duration }{
		{100 * time.Millisecond, 10 * time.Second},
		{100 * time.Millisecond, standbyPoll},
		{50 * time.Millisecond, 500 * time.Millisecond},
		{2 * time.Second, 2 * time.Second},
	} {
		b := jittered(c.lo, c.hi)
		for round := 0; round < 2; round++ {
			d := c.lo
			for n := 0; n < 12; n++ {
				wait := b.NextBackOff()
				if wait < d/2 || wait > d {
					t.Fatalf("jittered(%v, %v): wait %d is %v, want within [%v, %v]", c.lo, c.hi, n, wait, d/2, d)
				}
				d = min(2*d, c.hi)
			}
			b.Reset() // starts over from lo
		}
	}
}
