package readthrough

import (
	"fmt"
	"time"
)

// BreakerOptions configure a Cache's circuit breaker, which keeps a Redis that does
// not answer (hung, paused, partitioned away) from adding RedisTimeout to every read.
//
// After Failures reads in a row found Redis not answering (a timeout on the
// connection, or a refused or lost connection), reads skip Redis for Cooldown: Get,
// GetMany and the lookups read Postgres at once, fill nothing, and count
// Stats.RedisSkipped (a write-back model's reads return ErrRedisUnavailable, as when
// Redis fails). Then one read probes Redis; if Redis answers, reads use it again,
// otherwise it is skipped for another Cooldown. A read that waited for a pooled
// connection and got none says nothing about Redis and is not counted; neither is a
// read whose own context ended.
//
// Writes are not skipped: after a commit they always try to delete the row's entry, and
// a failure is handled as without a breaker (counted in Stats.Errors, logged, the
// entry left to the invalidator and its TTL).
//
// The zero value turns the breaker on with the defaults.
type BreakerOptions struct {
	// Failures is how many consecutive Redis reads must fail before reads skip Redis.
	// Default 5; negative turns the breaker off.
	Failures int
	// Cooldown is how long reads skip Redis before one of them probes it. Default 1s.
	Cooldown time.Duration
}

func (o BreakerOptions) withDefaults() (BreakerOptions, error) {
	if o.Cooldown < 0 {
		return o, fmt.Errorf("%w: Breaker.Cooldown %v is negative: give how long reads skip Redis, or 0 for the default 1s", ErrConfig, o.Cooldown)
	}
	if o.Failures == 0 {
		o.Failures = 5
	}
	if o.Cooldown == 0 {
		o.Cooldown = time.Second
	}
	return o, nil
}
