package writeback

import (
	"context"
	"fmt"
	"log/slog"

	"gorm.io/gorm"

	"github.com/pgcache/pgcache/keys"
)

// Operating on dead letters: an operator (pgcache-worker deadletter) reads them, applies
// one again once its cause is fixed (RetryDeadLetter), or drops it (DropDeadLetters).
// Neither needs Run: a Flusher made for the prefix is enough.

// DeadLetter returns the dead letter id, and false when the stream has none.
func (f *Flusher) DeadLetter(ctx context.Context, id string) (DeadLetter, bool, error) {
	e, ok, err := f.store.ReadStreamEntry(ctx, f.opts.DeadLetterKey, id)
	if err != nil || !ok {
		return DeadLetter{}, ok, err
	}
	return letterOf(e), true, nil
}

// RetryDeadLetter applies the dead letter id to Postgres now, as it was written (a
// soft delete over a pending write applies that write first), then deletes the row's
// cached value, so readers load the row from Postgres, and removes the letter from
// the stream.
//
// It applies the write over whatever Postgres holds: a write of the row made since,
// outside write-back, is overwritten (check the row first, or drop the letter). It
// refuses, with ErrWritePending, while a newer write-back write of the row is pending
// (checked under the row's lock, as the flusher checks its versions): that write
// replaces the row when flushed. A write that fails again (the cause is not fixed)
// returns the error and stays in the stream. A crash after the commit leaves the
// letter in place; retrying it again writes the same row again.
func (f *Flusher) RetryDeadLetter(ctx context.Context, id string) error {
	d, ok, err := f.DeadLetter(ctx, id)
	if err != nil {
		return fmt.Errorf("writeback: retry dead letter %s: %w", id, err)
	}
	if !ok {
		return fmt.Errorf("%w: %s in %s", ErrNoDeadLetter, id, f.opts.DeadLetterKey)
	}
	k, row, err := rowKey(d.Key)
	if err != nil {
		return fmt.Errorf("writeback: retry dead letter %s: it names no row (%v): it cannot be applied; drop it", id, err)
	}
	var dec decoder
	c, err := dec.decode([]byte(d.Change))
	if err == nil && d.Base != "" {
		var b Change
		if b, err = dec.decode([]byte(d.Base)); err == nil {
			c.Base = &b
		}
	}
	if err != nil {
		return fmt.Errorf("writeback: retry dead letter %s: its change cannot be decoded (%v): drop it", id, err)
	}
	w := &write{id: d.Version, key: k, row: row, change: &c}
	op, cancel := context.WithTimeout(ctx, f.opts.ApplyTimeout)
	defer cancel()
	err = f.db.WithContext(op).Transaction(func(tx *gorm.DB) error {
		if err := lockRows(op, tx, []*write{w}); err != nil {
			return err
		}
		vers, err := f.store.PendingVersions(op, []keys.Key{k})
		if err != nil {
			return err
		}
		if vers[0] != "" {
			return fmt.Errorf("%w (version %s): it replaces the row when flushed; drop this letter", ErrWritePending, vers[0])
		}
		return applyChanges(op, tx, []*Change{&c})
	})
	if err != nil {
		return fmt.Errorf("writeback: retry dead letter %s (%s): %w", id, d.Key, err)
	}
	if err := f.store.Invalidate(ctx, k); err != nil {
		return fmt.Errorf("writeback: dead letter %s applied, but its row's cached value could not be deleted (the worker deletes it when it sees the commit): %w", id, err)
	}
	if _, err := f.store.DeleteStreamEntries(ctx, f.opts.DeadLetterKey, id); err != nil {
		return fmt.Errorf("writeback: dead letter %s applied, but not removed from %s: %w", id, f.opts.DeadLetterKey, err)
	}
	f.log.LogAttrs(ctx, slog.LevelInfo, "write-back: dead letter applied and removed",
		slog.String("id", id), slog.String(attrKey, d.Key), slog.String("stream", f.opts.DeadLetterKey))
	return nil
}

// DropDeadLetters removes dead letters from the stream without applying them, and
// returns how many were there.
func (f *Flusher) DropDeadLetters(ctx context.Context, ids ...string) (int, error) {
	n, err := f.store.DeleteStreamEntries(ctx, f.opts.DeadLetterKey, ids...)
	if err != nil {
		return 0, fmt.Errorf("writeback: drop dead letters: %w", err)
	}
	return int(n), nil
}
