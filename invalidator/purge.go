package invalidator

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/pgcache/pgcache/internal/retry"
	"github.com/pgcache/pgcache/keys"
)

// Purger is told the surrogate keys (tags) of rows the worker invalidated, for a CDN or HTTP cache.
//
// The tags are those package httpcache sends with responses (keys.Key.Tag for rows and
// lookup entries, keys.Space.TableTag for tables flushed whole), at most purgeBatch per
// call. Purge must return once ctx ends; it is retried with backoff until it succeeds
// or Options.PurgeTimeout passes, and it may be called again with tags it purged
// already.
type Purger interface {
	Purge(ctx context.Context, tags []string) error
}

// purgeBatch is the most tags one Purge call carries (Fastly accepts 256 keys per
// request).
const purgeBatch = 256

// defaultPurgeTimeout bounds, by default, how long purging may hold a transaction's
// acknowledgement.
const defaultPurgeTimeout = 2 * time.Second

// purging is an Invalidator's purger and its counters.
type purging struct {
	purger  Purger
	timeout time.Duration
	log     *slog.Logger
	// purged counts tags purged; purgeErrors purges given up on.
	purged, purgeErrors atomic.Uint64
}

func newPurging(opts Options) *purging {
	p := &purging{purger: opts.Purger, timeout: opts.PurgeTimeout, log: opts.Logger}
	if p.timeout <= 0 {
		p.timeout = defaultPurgeTimeout
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p
}

// tagSet collects the tags of a batch's invalidated keys, each once.
type tagSet struct {
	seen map[string]bool
	tags []string
}

func (s *tagSet) add(tags ...string) {
	if s == nil {
		return
	}
	if s.seen == nil {
		s.seen = make(map[string]bool)
	}
	for _, t := range tags {
		if t != "" && !s.seen[t] {
			s.seen[t] = true
			s.tags = append(s.tags, t)
		}
	}
}

func (s *tagSet) addKeys(ks []keys.Key) {
	if s == nil {
		return
	}
	for _, k := range ks {
		s.add(k.Tag())
	}
}

// purge tells the purger the tags, in batches, retrying each with backoff, and returns
// after PurgeTimeout at the latest, whatever the purger does: a CDN that is down must
// not hold the change stream. Failures are logged and counted (Stats.PurgeErrors),
// never returned: Redis, the cache whose coherence is promised, is already
// invalidated.
func (p *purging) purge(ctx context.Context, tags []string) {
	if p.purger == nil || len(tags) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
	defer cancel()
	done := make(chan int, 1) // how many tags were purged
	go func() {
		n := 0
		for lo := 0; lo < len(tags); lo += purgeBatch {
			batch := tags[lo:min(lo+purgeBatch, len(tags))]
			_, err := backoff.Retry(ctx, func() (struct{}, error) {
				return struct{}{}, p.purger.Purge(ctx, batch)
			}, backoff.WithBackOff(retry.Backoff(10*time.Millisecond, 500*time.Millisecond)), backoff.WithMaxElapsedTime(p.timeout))
			if err != nil {
				p.log.Warn("purge failed; the CDN may serve these responses until they expire",
					slog.Int("tags", len(batch)), slog.Any("error", err))
				break
			}
			n += len(batch)
		}
		done <- n
	}()
	select {
	case n := <-done:
		p.purged.Add(uint64(n))
		if n < len(tags) {
			p.purgeErrors.Add(1)
		}
	case <-ctx.Done():
		// The purger did not return within the bound (it should have, on ctx): give up
		// waiting; its goroutine ends when it does.
		p.purgeErrors.Add(1)
		p.log.Warn("purge timed out; the CDN may serve these responses until they expire",
			slog.Int("tags", len(tags)), slog.Duration("timeout", p.timeout))
	}
}
