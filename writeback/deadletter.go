package writeback

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
)

// DeadLetter is a write-back write that could not be applied to Postgres and was
// given up on. It stays in the dead-letter stream until someone deletes it: apply it
// by hand (Change holds the row) or drop it.
type DeadLetter struct {
	// ID is the entry's id in the dead-letter stream.
	ID string
	// Key is the row's value key; Version the write's id in the journal.
	Key, Version string
	// Table is the row's table, schema-qualified and quoted as in SQL.
	Table string
	// Change is the journaled change, as written (see Change and UnmarshalChange).
	Change string
	// Base is, for a soft delete journaled over a pending write, that write's change,
	// to apply before Change (see Change.Base); "" otherwise.
	Base string
	// Reason is the last error.
	Reason string
	// Attempts is how many times the write was tried on its own.
	Attempts int
	// Consumer is the flusher that gave up.
	Consumer string
	// FailedAt is when it gave up.
	FailedAt time.Time
}

// Dead-letter entry fields.
const (
	dlKey      = "key"
	dlVersion  = "version"
	dlTable    = "table"
	dlChange   = "change"
	dlBase     = "base"
	dlReason   = "reason"
	dlAttempts = "attempts"
	dlConsumer = "consumer"
	dlFailedAt = "failed_at"
)

// deadLetter records the writes in the dead-letter stream, then deletes each row's
// pending record if it still holds that write, together with the row's cached value:
// the write will not reach Postgres, so readers go back to what Postgres has. (A newer
// write of the row stays pending.) A crash between the two steps records a write
// twice, never loses one.
func (f *Flusher) deadLetter(ctx context.Context, ws []*write) error {
	if len(ws) == 0 {
		return nil
	}
	now := time.Now().UTC()
	entries := make([][]string, len(ws))
	letters := make([]DeadLetter, len(ws))
	var clear []store.Versioned
	for i, w := range ws {
		d := DeadLetter{Key: w.key.Value(), Version: w.id, Change: w.raw, Base: w.rawBase, Reason: w.reason,
			Attempts: w.tries, Consumer: f.opts.Consumer, FailedAt: now}
		if w.change != nil {
			d.Table = w.change.qualifiedTable()
		}
		letters[i] = d
		entries[i] = []string{dlKey, d.Key, dlVersion, d.Version, dlTable, d.Table, dlChange, d.Change,
			dlReason, d.Reason, dlAttempts, strconv.Itoa(d.Attempts), dlConsumer, d.Consumer,
			dlFailedAt, d.FailedAt.Format(time.RFC3339Nano)}
		if d.Base != "" {
			entries[i] = append(entries[i], dlBase, d.Base)
		}
		if w.key != (keys.Key{}) {
			clear = append(clear, store.Versioned{Key: w.key, Version: w.id})
		}
	}
	if err := f.store.AppendStream(ctx, f.opts.DeadLetterKey, entries); err != nil {
		return fmt.Errorf("writeback: dead-letter: %w", err)
	}
	if _, err := f.store.ClearPending(ctx, clear, true); err != nil {
		return fmt.Errorf("writeback: dead-letter: clear pending records: %w", err)
	}
	f.stats.deadLettered.Add(uint64(len(ws)))
	for _, d := range letters {
		f.log.LogAttrs(ctx, slog.LevelError, "write-back flusher: write moved to the dead-letter stream",
			slog.String(attrKey, d.Key), slog.String("version", d.Version), slog.String("reason", d.Reason),
			slog.String("stream", f.opts.DeadLetterKey))
		if f.opts.OnDeadLetter != nil {
			f.opts.OnDeadLetter(d)
		}
	}
	return nil
}

// DeadLetters returns up to count entries of the dead-letter stream, oldest first.
func (f *Flusher) DeadLetters(ctx context.Context, count int) ([]DeadLetter, error) {
	es, err := f.store.ReadStream(ctx, f.opts.DeadLetterKey, count)
	if err != nil {
		return nil, fmt.Errorf("writeback: read dead letters: %w", err)
	}
	out := make([]DeadLetter, len(es))
	for i, e := range es {
		out[i] = letterOf(e)
	}
	return out, nil
}

// letterOf reads a dead-letter stream entry.
func letterOf(e store.StreamEntry) DeadLetter {
	d := DeadLetter{ID: e.ID, Key: e.Fields[dlKey], Version: e.Fields[dlVersion], Table: e.Fields[dlTable],
		Change: e.Fields[dlChange], Base: e.Fields[dlBase], Reason: e.Fields[dlReason], Consumer: e.Fields[dlConsumer]}
	d.Attempts, _ = strconv.Atoi(e.Fields[dlAttempts])
	d.FailedAt, _ = time.Parse(time.RFC3339Nano, e.Fields[dlFailedAt])
	return d
}

// Stats counts what a flusher did. Counters only grow.
type Stats struct {
	Read         uint64 // journal entries read (new, this consumer's own, or claimed)
	Claimed      uint64 // entries claimed from flushers that stopped acknowledging
	Batches      uint64 // transactions committed
	Applied      uint64 // rows written to Postgres
	Superseded   uint64 // entries skipped: a newer write of the row was pending, or the write was applied before (a replay)
	DeadLettered uint64 // writes moved to the dead-letter stream
	Retries      uint64 // failed attempts retried after a backoff
	Errors       uint64 // failures of Redis or Postgres, retried
	Abandoned    uint64 // entries whose write never landed within LandingTimeout, fenced and dropped
}

type counters struct {
	read, claimed, batches, applied, superseded, deadLettered, retries, errors, abandoned atomic.Uint64
}

// Stats returns a snapshot of the flusher's counters.
func (f *Flusher) Stats() Stats {
	c := &f.stats
	return Stats{
		Read: c.read.Load(), Claimed: c.claimed.Load(), Batches: c.batches.Load(), Applied: c.applied.Load(),
		Superseded: c.superseded.Load(), DeadLettered: c.deadLettered.Load(), Retries: c.retries.Load(),
		Errors: c.errors.Load(), Abandoned: c.abandoned.Load(),
	}
}
