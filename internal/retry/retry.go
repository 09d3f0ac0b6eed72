// Package retry holds the one backoff pgcache retries with (the stream's reconnects,
// the invalidator's Redis operations, the write-back flusher's loop): waits doubling
// from a floor up to a cap, with equal jitter, so that processes that failed together
// do not retry together. The waits come from github.com/cenkalti/backoff/v5.
package retry

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Backoff returns the waits between attempts: lo doubled on each call, capped at hi,
// each wait drawn from [d/2, d] for the step d, so that no wait exceeds hi. Reset
// starts it over from lo. It is not safe for concurrent use.
//
// ExponentialBackOff draws a wait from interval·[1-f, 1+f]; an interval of ¾d with
// f = ⅓ is [d/2, d].
func Backoff(lo, hi time.Duration) *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     lo * 3 / 4,
		MaxInterval:         hi * 3 / 4,
		RandomizationFactor: 1.0 / 3,
		Multiplier:          2,
	}
	b.Reset()
	return b
}

// Wait sleeps for b's next wait, or until ctx ends, whose error it returns.
func Wait(ctx context.Context, b backoff.BackOff) error {
	t := time.NewTimer(b.NextBackOff())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
