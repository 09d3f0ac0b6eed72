package invalidator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/pgcache/pgcache/internal/retry"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
)

// Purger is told the surrogate keys (tags) of rows the worker invalidated, for a CDN or HTTP cache.
//
// The tags are those package httpcache sends with responses (keys.Key.Tag for rows and
// lookup entries, keys.Space.TableTag for tables flushed whole), at most purgeBatch per
// call. Purge must return once ctx ends; it may be called again with tags it purged
// already (every purge is repeated, see Options.RepurgeAfter, and a purge that failed
// is retried), so it must be idempotent.
type Purger interface {
	Purge(ctx context.Context, tags []string) error
}

// Purging is at least once, without holding acknowledgements longer than a bound:
//
//   - After a batch's keys are deleted, its tags are purged at once, retried with
//     backoff for at most PurgeTimeout.
//   - What is not purged by then (the purger failed, or hangs) is appended to the
//     prefix's purge stream (keys.Prefix.Purges) before the batch is acknowledged, so
//     a crash after the acknowledgement loses nothing; a crash before it makes the
//     stream deliver the batch again, and its tags are purged again.
//   - Every batch's tags are appended once more, due RepurgeAfter later: the second
//     purge, for responses rendered from the old row that reached the CDN after the
//     first (the purge overtook them).
//   - RunPurges (run by Worker.Run) reads the stream, purges the entries that are due,
//     in batches, and deletes each entry only once the purger succeeded; it retries
//     with backoff for as long as the purger fails. While failed purges wait in the
//     stream, new batches append their tags there without trying the purger first,
//     so a CDN that is down costs the change stream one Redis write per batch.
//
// Entries are deleted after the purge, so an entry may be purged twice (by a
// RunPurges that stopped before deleting it, or by two workers sharing the prefix):
// purges are idempotent.

// purgeBatch is the most tags one Purge call carries (Fastly accepts 256 keys per
// request).
const purgeBatch = 256

// defaultPurgeTimeout bounds, by default, how long purging may hold a transaction's
// acknowledgement.
const defaultPurgeTimeout = 2 * time.Second

// defaultRepurgeAfter is, by default, how long after a purge the same tags are purged
// again.
const defaultRepurgeAfter = 2 * time.Second

// Purge stream entry fields.
const (
	purgeTags = "tags" // a JSON array of tags
	purgeDue  = "due"  // Unix milliseconds, by the writer's clock: not purged before
)

const (
	// purgeRead is how many stream entries RunPurges reads at a time.
	purgeRead = 512
	// purgeIdle is how often RunPurges reads the stream when nothing woke it: for
	// entries another process wrote.
	purgeIdle = 5 * time.Second
)

// purging is an Invalidator's purger, its retry stream and its counters.
type purging struct {
	purger  Purger
	timeout time.Duration
	// repurge is Options.RepurgeAfter; 0 for off.
	repurge time.Duration
	log     *slog.Logger
	st      *store.Store
	stream  string // keys.Prefix.Purges
	// down is set while failed purges wait in the stream: new tags go there directly.
	down atomic.Bool
	// wake tells RunPurges that entries were appended.
	wake chan struct{}
	// purged counts tags purged; purgeErrors purges not done within the bound.
	purged, purgeErrors atomic.Uint64
	// pending and delayMs: the stream's length and how late its most overdue entry
	// was, as RunPurges last read them.
	pending, delayMs atomic.Int64
}

func newPurging(opts Options, st *store.Store) *purging {
	p := &purging{purger: opts.Purger, timeout: opts.PurgeTimeout, repurge: opts.RepurgeAfter, log: opts.Logger,
		st: st, stream: keys.Prefix(opts.Prefix).Purges(), wake: make(chan struct{}, 1)}
	if p.timeout <= 0 {
		p.timeout = defaultPurgeTimeout
	}
	switch {
	case p.repurge == 0:
		p.repurge = defaultRepurgeAfter
	case p.repurge < 0:
		p.repurge = 0
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

// list returns the tags collected; none for a nil set.
func (s *tagSet) list() []string {
	if s == nil {
		return nil
	}
	return s.tags
}

func (s *tagSet) addKeys(ks []keys.Key) {
	if s == nil {
		return
	}
	for _, k := range ks {
		s.add(k.Tag())
	}
}

// purge purges the tags of a batch whose keys are deleted, before the batch is
// acknowledged: at once, for at most PurgeTimeout, then, for what that did not purge
// and for the second purge, by appending them to the purge stream (see above). It
// returns an error only when Redis did not take the stream entries (RetryFor
// passed): the batch must not be acknowledged then.
func (v *Invalidator) purge(ctx context.Context, tags []string) error {
	p := v.purging
	if p.purger == nil || len(tags) == 0 {
		return nil
	}
	hooks := testhooks.PurgeFrom(ctx)
	failed := tags
	if !p.down.Load() || hooks.Undurable {
		failed = p.purgeNow(ctx, tags)
	}
	if hooks.Undurable {
		if len(failed) > 0 {
			p.log.Warn("purge failed; the CDN may serve these responses until they expire",
				slog.Int("tags", len(failed)))
		}
		return nil
	}
	now := time.Now()
	var entries [][]string
	if len(failed) > 0 {
		entries = appendPurges(entries, failed, now)
	}
	if p.repurge > 0 && !hooks.Unrepeated {
		entries = appendPurges(entries, tags, now.Add(p.repurge))
	}
	if len(entries) == 0 {
		return nil
	}
	if err := v.retry(ctx, func(ctx context.Context) error { return p.st.AppendStream(ctx, p.stream, entries) }); err != nil {
		return fmt.Errorf("keep %d tags for purging in %s: %w", len(tags), p.stream, err)
	}
	if len(failed) > 0 {
		p.down.Store(true)
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

// appendPurges appends the stream entries of tags, due at due, purgeBatch tags each.
func appendPurges(entries [][]string, tags []string, due time.Time) [][]string {
	at := strconv.FormatInt(due.UnixMilli(), 10)
	for lo := 0; lo < len(tags); lo += purgeBatch {
		b, _ := json.Marshal(tags[lo:min(lo+purgeBatch, len(tags))]) // strings: cannot fail
		entries = append(entries, []string{purgeTags, string(b), purgeDue, at})
	}
	return entries
}

// purgeNow tells the purger the tags, in batches, retrying each with backoff, and
// returns after PurgeTimeout at the latest, whatever the purger does: a CDN that is
// down must not hold the change stream. It returns the tags not purged, and counts
// them (Stats.PurgeErrors).
func (p *purging) purgeNow(ctx context.Context, tags []string) []string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
	defer cancel()
	n := 0 // tags purged
	for lo := 0; lo < len(tags); lo += purgeBatch {
		batch := tags[lo:min(lo+purgeBatch, len(tags))]
		_, err := backoff.Retry(ctx, func() (struct{}, error) {
			return struct{}{}, p.call(ctx, batch)
		}, backoff.WithBackOff(retry.Backoff(10*time.Millisecond, 500*time.Millisecond)), backoff.WithMaxElapsedTime(p.timeout))
		if err != nil {
			p.log.Warn("purge failed; retrying from the purge stream",
				slog.Int("tags", len(tags)-n), slog.Any("error", err))
			break
		}
		n += len(batch)
	}
	p.purged.Add(uint64(n))
	if n < len(tags) {
		p.purgeErrors.Add(1)
	}
	return tags[n:]
}

// RunPurges purges the tags waiting in the purge stream (failed purges and second
// purges) until ctx ends, then returns nil. Worker.Run runs it; an Invalidator used as
// a cdc.Handler on its own needs it run beside the stream, or purges that failed are
// never retried. Without a Purger it returns at once.
func (v *Invalidator) RunPurges(ctx context.Context) error {
	p := v.purging
	if p.purger == nil {
		return nil
	}
	waits := retry.Backoff(100*time.Millisecond, 30*time.Second)
	for {
		wait, err := p.drain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wake := p.wake
		if err != nil {
			wait, wake = waits.NextBackOff(), nil // a wake-up must not hammer a CDN that is down
			p.log.Warn("purging from the purge stream failed; retrying", slog.String("stream", p.stream),
				slog.Any("error", err), slog.Duration("in", wait))
		} else {
			waits.Reset()
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// drain purges the entries of the stream that are due, and deletes them, and returns
// how long to wait before the next is due.
func (p *purging) drain(ctx context.Context) (time.Duration, error) {
	for {
		n, err := p.st.JournalLen(ctx, p.stream)
		if err != nil {
			return 0, err
		}
		p.pending.Store(n)
		if n == 0 {
			p.delayMs.Store(0)
			p.down.Store(false)
			return purgeIdle, nil
		}
		entries, err := p.st.ReadStream(ctx, p.stream, purgeRead)
		if err != nil {
			return 0, err
		}
		now := time.Now()
		wait, late := purgeIdle, time.Duration(0)
		var due []store.StreamEntry
		for _, e := range entries {
			// An entry without a readable due time is due (purgeEntries drops it if
			// its tags are unreadable too).
			if at, err := strconv.ParseInt(e.Fields[purgeDue], 10, 64); err == nil {
				if d := time.UnixMilli(at).Sub(now); d > 0 {
					wait = min(wait, d)
					continue
				}
				late = max(late, now.Sub(time.UnixMilli(at)))
			}
			due = append(due, e)
		}
		p.delayMs.Store(late.Milliseconds())
		if len(due) == 0 {
			return wait, nil
		}
		if err := p.purgeEntries(ctx, due); err != nil {
			return 0, err
		}
		if len(due) < len(entries) {
			return wait, nil
		}
		// Every entry read was due and is purged: read on, for more and the length.
	}
}

// call calls the purger once, and returns after PurgeTimeout (or when ctx ends) at the
// latest, whatever the purger does: a purger that ignores its context must hold
// neither the change stream nor RunPurges.
func (p *purging) call(ctx context.Context, tags []string) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.purger.Purge(ctx, tags) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("the purger did not return within PurgeTimeout (%v): %w", p.timeout, ctx.Err())
	}
}

// purgeEntries purges the tags of due entries, up to purgeBatch tags per Purge, and
// deletes the entries of each batch once it is purged.
func (p *purging) purgeEntries(ctx context.Context, entries []store.StreamEntry) error {
	var (
		ids  []string
		tags tagSet
	)
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		if len(tags.tags) > 0 {
			if err := p.call(ctx, tags.tags); err != nil {
				p.purgeErrors.Add(1)
				p.down.Store(true)
				return fmt.Errorf("purge %d tags: %w", len(tags.tags), err)
			}
			p.purged.Add(uint64(len(tags.tags)))
		}
		p.down.Store(false)
		if _, err := p.st.DeleteStreamEntries(ctx, p.stream, ids...); err != nil {
			return err
		}
		ids, tags = nil, tagSet{}
		return nil
	}
	for _, e := range entries {
		var ts []string
		if err := json.Unmarshal([]byte(e.Fields[purgeTags]), &ts); err != nil {
			// Not written by purge: dropped, or it would block the stream for good.
			p.log.Error("dropping an unreadable entry of the purge stream", slog.String("stream", p.stream),
				slog.String("id", e.ID), slog.Any("error", err))
			ts = nil
		}
		if len(tags.tags)+len(ts) > purgeBatch {
			if err := flush(); err != nil {
				return err
			}
		}
		ids = append(ids, e.ID)
		tags.add(ts...)
	}
	return flush()
}
