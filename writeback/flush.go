package writeback

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/pgcache/pgcache/internal/retry"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
)

// write is the latest journaled write of one row in a batch.
type write struct {
	id  string // journal entry id: the write's version
	key keys.Key
	row string // the row's table and key values, the same under every schema version
	raw string // the change as journaled
	// rawBase is the write a soft delete carries (see store.SoftDelete), as journaled.
	rawBase string
	change  *Change // nil when it could not be decoded
	reason  string  // why it goes to the dead-letter stream
	tries   int
	entry   store.JournalEntry
	hold    bool // not landed yet: keep the entry for a later batch
}

// flush applies one batch of journal entries:
//
//  1. decode, and sort the entries out by their row's state (see sortOut): an entry
//     is applied only when its row's pending record holds its id; one whose write has
//     not landed yet is held for a later batch (fenced once LandingTimeout old);
//     every other one is superseded (or applied before: a replay);
//  2. of the entries to apply, keep per row the one with the highest id
//     (coalescing), rows told apart by table and key values, whatever the schema
//     version of their key;
//  3. apply them in one transaction and, holding the rows' locks, check the versions
//     again (see applyTx); after a failure caused by a row's data, apply row by row
//     and dead-letter the rows that keep failing;
//  4. delete the pending records of the applied rows that still hold their version,
//     and of the older writes of step 2 (under another schema version's key);
//  5. acknowledge and delete every entry of the batch but those held.
//
// A crash between any two steps leaves the entries pending; whoever takes them up
// repeats the steps, and step 1 skips what step 4 already did. Applying a row twice
// writes the same values twice. It returns the entries held.
//
// Operations are bounded by their own timeouts, not by ctx, so that a batch under way
// completes when Run is stopped; ctx ends the waits between retries.
func (f *Flusher) flush(ctx context.Context, entries []store.JournalEntry) ([]store.JournalEntry, error) {
	if f.hooks.FailBatch != nil {
		if err := f.hooks.FailBatch(); err != nil {
			return nil, err
		}
	}
	op := context.WithoutCancel(ctx)
	b, err := f.sortOut(op, entries) // steps 1 and 2
	if err != nil {
		return nil, err
	}
	todo := b.decoded(b.rows)
	testhooks.Run(f.hooks.BeforeApply)
	applied, failed, err := f.apply(ctx, todo) // step 3
	if err != nil {
		return nil, err
	}
	b.dead = append(b.dead, failed...)
	if len(applied) > 0 {
		f.stats.batches.Add(1)
		f.stats.applied.Add(uint64(len(applied)))
		testhooks.Run(f.hooks.AfterCommit)
	}
	if err := f.clear(op, slices.Concat(applied, b.older)); err != nil { // step 4
		return nil, err
	}
	if err := f.deadLetter(op, b.dead); err != nil {
		return nil, err
	}
	testhooks.Run(f.hooks.AfterClear)
	if err := f.store.AckJournals(op, f.opts.Group, b.ids); err != nil { // step 5
		return nil, fmt.Errorf("writeback: acknowledge: %w", err)
	}
	return b.held, nil
}

// batch is a batch of journal entries sorted out by sortOut.
type batch struct {
	ids map[string][]string // by stream, the ids of the entries to acknowledge, once
	// rows holds the latest write of each row, in the order of the rows' identities:
	// concurrent flushers lock rows in that order.
	rows []*write
	// older holds writes superseded by a later one of the row in the batch that left
	// a pending record of their own: under another schema version's key.
	older []*write
	dead  []*write             // writes that cannot be applied, to dead-letter
	held  []store.JournalEntry // entries whose write has not landed yet
}

// sortOut decodes a batch, sorts its entries out by their rows' state and keeps the
// latest write of each row (flush's steps 1 and 2).
//
// Rows are told apart by their identity, not their key: during a rolling deploy two
// schema versions may write the same row under different keys.
//
// An entry whose row's pending record holds its id has landed and is the row's
// latest write. One whose row's pending record holds a later id, or whose row's
// landing mark is at or past its id, is superseded, applied and cleared before, or
// fenced: it can no longer land (see internal/store, writeback.go). Any other one may
// still land: it is held until it is LandingTimeout old, then fenced; if it landed
// meanwhile, it is held for the next batch.
func (f *Flusher) sortOut(ctx context.Context, entries []store.JournalEntry) (batch, error) {
	b := batch{ids: make(map[string][]string)}
	seen := make(map[string]bool, len(entries))
	var ws []*write
	for _, e := range entries {
		if seen[e.Stream+" "+e.ID] {
			continue // claimed again while held
		}
		seen[e.Stream+" "+e.ID] = true
		if e.Empty {
			b.ids[e.Stream] = append(b.ids[e.Stream], e.ID) // deleted from the stream: nothing to apply
			continue
		}
		w := f.decode(e)
		if w.key == (keys.Key{}) {
			b.ids[e.Stream] = append(b.ids[e.Stream], e.ID)
			b.dead = append(b.dead, w)
			continue
		}
		ws = append(ws, w)
	}
	live, fence, err := f.landed(ctx, ws)
	if err != nil {
		return b, err
	}
	if len(fence) > 0 {
		items := make([]store.Versioned, len(fence))
		for i, w := range fence {
			items[i] = store.Versioned{Key: w.key, Version: w.id}
		}
		fenced, err := f.store.FenceEntries(ctx, items)
		if err != nil {
			return b, fmt.Errorf("writeback: fence entries that did not land: %w", err)
		}
		for i, w := range fence {
			if fenced[i] {
				f.stats.abandoned.Add(1)
				f.log.Warn("writeback: gave up on a write that did not land within LandingTimeout",
					slog.String(attrKey, w.key.Value()), slog.String("entry", w.id))
			} else {
				w.hold = true
			}
		}
	}
	latest := make(map[string]*write)
	for _, w := range ws {
		if w.hold {
			b.held = append(b.held, w.entry)
			continue
		}
		b.ids[w.entry.Stream] = append(b.ids[w.entry.Stream], w.id)
		if !live[w] {
			continue
		}
		if prev, ok := latest[w.row]; ok {
			f.stats.superseded.Add(1)
			if store.CompareIDs(w.id, prev.id) < 0 {
				b.older = append(b.older, w)
				continue
			}
			b.older = append(b.older, prev)
		}
		latest[w.row] = w
	}
	b.rows = make([]*write, 0, len(latest))
	for _, w := range latest {
		b.rows = append(b.rows, w)
	}
	// An older write under the latest's key needs nothing: the latest replaced its
	// pending record. One under another schema version's key left a record of its own.
	b.older = slices.DeleteFunc(b.older, func(w *write) bool { return w.key == latest[w.row].key })
	slices.SortFunc(b.rows, func(a, b *write) int { return strings.Compare(a.row, b.row) })
	return b, nil
}

// landed reads the state of the writes' rows and returns the writes that are their
// row's pending write, and those to fence; it marks those to hold.
func (f *Flusher) landed(ctx context.Context, ws []*write) (map[*write]bool, []*write, error) {
	if len(ws) == 0 {
		return nil, nil, nil
	}
	ks := make([]keys.Key, 0, len(ws))
	at := make(map[keys.Key]int, len(ws))
	for _, w := range ws {
		if _, ok := at[w.key]; !ok {
			at[w.key] = len(ks)
			ks = append(ks, w.key)
		}
	}
	states, err := f.store.RowStates(ctx, ks)
	if err != nil {
		return nil, nil, fmt.Errorf("writeback: check versions: %w", err)
	}
	live := make(map[*write]bool, len(ws))
	var fence []*write
	now := time.Now()
	for _, w := range ws {
		st := states[at[w.key]]
		switch {
		case st.Version == w.id:
			live[w] = true
		case st.Version != "" && store.CompareIDs(st.Version, w.id) > 0,
			st.Landed != "" && store.CompareIDs(st.Landed, w.id) >= 0,
			f.hooks.AssumeLanded:
			f.stats.superseded.Add(1)
		case now.Sub(entryTime(w.id)) < f.opts.LandingTimeout:
			w.hold = true
		default:
			fence = append(fence, w)
		}
	}
	return live, fence, nil
}

// entryTime returns the time of a journal entry's id: its milliseconds part.
func entryTime(id string) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return time.UnixMilli(n)
}

// decoded returns the writes of live that have a change to apply, and moves those
// that do not to the dead letters.
func (b *batch) decoded(live []*write) []*write {
	var todo []*write
	for _, w := range live {
		if w.change == nil {
			b.dead = append(b.dead, w)
		} else {
			todo = append(todo, w)
		}
	}
	return todo
}

// decode returns the write of a journal entry. A write whose change cannot be decoded
// has no change, and one whose row key cannot be parsed no key either; both have the
// reason they go to the dead-letter stream.
func (f *Flusher) decode(e store.JournalEntry) *write {
	w := &write{id: e.ID, raw: e.Change, rawBase: e.Base, entry: e}
	k, row, err := rowKey(e.Key)
	if err != nil {
		w.reason = err.Error()
		return w
	}
	w.key, w.row = k, row
	if c, err := f.dec.decode([]byte(e.Change)); err != nil {
		w.reason = err.Error()
	} else if c.Base, err = f.base(c, e.Base); err != nil {
		w.reason = err.Error()
	} else {
		w.change = &c
	}
	return w
}

// clear deletes the pending records of writes applied, or superseded, if they still
// hold their version (flush's step 4), and with each the row's cached value, fence and
// response epoch: readers go back to Postgres, which may hold the row in another form
// than the one written (char(n) padded, timestamps to the microsecond, defaults and
// triggers applied), as the invalidator's deletion of the commit would make them.
func (f *Flusher) clear(ctx context.Context, ws []*write) error {
	if len(ws) == 0 {
		return nil
	}
	items := make([]store.Versioned, len(ws))
	for i, w := range ws {
		items[i] = store.Versioned{Key: w.key, Version: w.id}
	}
	if _, err := f.store.ClearPending(ctx, items, true); err != nil {
		return fmt.Errorf("writeback: clear pending records: %w", err)
	}
	return nil
}

// base decodes the change a soft delete carries (see store.SoftDelete): an upsert of
// the same row, or nothing.
func (f *Flusher) base(c Change, raw string) (*Change, error) {
	if raw == "" {
		return nil, nil
	}
	b, err := f.dec.decode([]byte(raw))
	if err != nil {
		return nil, fmt.Errorf("base write: %w", err)
	}
	if c.SoftDelete == "" || b.Delete || b.Schema != c.Schema || b.Table != c.Table || !slices.Equal(b.Key, c.Key) {
		return nil, fmt.Errorf("%w: %s.%s: a base write goes only with a soft delete, and must be an upsert of the same table", ErrBadChange, c.Schema, c.Table)
	}
	return &b, nil
}

// current returns the rows whose pending record still holds their version.
func (f *Flusher) current(ctx context.Context, rows []*write) ([]*write, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	ks := make([]keys.Key, len(rows))
	for i, w := range rows {
		ks[i] = w.key
	}
	vers, err := f.store.PendingVersions(ctx, ks)
	if err != nil {
		return nil, fmt.Errorf("writeback: check versions: %w", err)
	}
	live := rows[:0:0]
	for i, w := range rows {
		if vers[i] == w.id {
			live = append(live, w)
		} else {
			f.stats.superseded.Add(1)
		}
	}
	return live, nil
}

// apply applies the rows in one transaction, retrying failures that are not the data's
// fault. When the data is at fault it applies the rows one by one, so one bad row
// does not hold up the others, and returns the rows that failed MaxAttempts times.
func (f *Flusher) apply(ctx context.Context, rows []*write) (applied, dead []*write, err error) {
	if len(rows) == 0 {
		return nil, nil, nil
	}
	bo := f.backoff()
	for {
		ok, err := f.applyTx(ctx, rows)
		if err == nil {
			return ok, nil, nil
		}
		if permanent(err) {
			if len(rows) > 1 {
				f.failed("apply batch; applying its rows one by one", err, slog.Int(attrRows, len(rows)))
			}
			break
		}
		f.failed("apply batch", err, slog.Int(attrRows, len(rows)))
		f.stats.retries.Add(1)
		if err := retry.Wait(ctx, bo); err != nil {
			return nil, nil, err
		}
	}
	for _, w := range rows {
		bo := f.backoff()
		for {
			ok, err := f.applyTx(ctx, []*write{w})
			if err == nil {
				applied = append(applied, ok...)
				break
			}
			if permanent(err) {
				w.tries++
				if w.tries >= f.opts.MaxAttempts {
					w.reason = err.Error()
					dead = append(dead, w)
					break
				}
			}
			f.failed("apply row", err, slog.String(attrKey, w.key.Value()))
			f.stats.retries.Add(1)
			if err := retry.Wait(ctx, bo); err != nil {
				return nil, nil, err
			}
		}
	}
	return applied, dead, nil
}

var errSuperseded = errors.New("writeback: rows superseded during the transaction")

// applyTx writes the rows in one transaction and returns those it committed.
//
// The versions were checked before, but a newer write of a row may be journaled and
// applied by another flusher meanwhile; committing this older one after it would put
// the older row in Postgres for good. So the transaction first takes an advisory lock
// per row (see lockRows), and the versions are checked again holding the locks,
// while the statements run (see checkWhileApplying). A row whose version still matched then cannot have a newer
// write applied before this commit: the newer write's flusher needs the lock, which
// it gets after this commit, and it checks its own version only after it got it. Rows
// that no longer match are dropped and the transaction is run again without them.
//
// The locks are advisory, not only the rows' own, because a DELETE does not wait for
// an INSERT of the same key that has not committed: it deletes nothing and commits,
// and the insert's commit then brings back a row whose deletion was acknowledged.
func (f *Flusher) applyTx(ctx context.Context, rows []*write) ([]*write, error) {
	for len(rows) > 0 {
		stale := make(map[*write]bool)
		op, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.opts.ApplyTimeout)
		err := f.db.WithContext(op).Transaction(func(tx *gorm.DB) error {
			if err := lockRows(op, tx, rows); err != nil {
				return err
			}
			live, err := f.checkWhileApplying(op, tx, rows)
			if err != nil {
				return err
			}
			if len(live) == len(rows) {
				testhooks.Run(f.hooks.BeforeCommit)
				return nil
			}
			for _, w := range rows {
				stale[w] = true
			}
			for _, w := range live {
				delete(stale, w)
			}
			return errSuperseded
		})
		cancel()
		if errors.Is(err, errSuperseded) {
			rows = slices.DeleteFunc(slices.Clone(rows), func(w *write) bool { return stale[w] })
			continue
		}
		if err != nil {
			return nil, err
		}
		return rows, nil
	}
	return nil, nil
}

// checkWhileApplying runs the rows' statements on tx and, at the same time, reads
// which rows are still current (see current): Redis answers while Postgres works. The
// check needs only the rows' locks, taken before (see applyTx): a newer write's flusher
// waits for them, whatever the statements do.
func (f *Flusher) checkWhileApplying(ctx context.Context, tx *gorm.DB, rows []*write) ([]*write, error) {
	var (
		live     []*write
		checkErr error
	)
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		if f.hooks.NoRecheck {
			live = rows
			return
		}
		live, checkErr = f.current(ctx, rows)
	}()
	changes := make([]*Change, len(rows))
	for i, w := range rows {
		changes[i] = w.change
	}
	err := applyChanges(ctx, tx, changes)
	<-checked
	return live, cmp.Or(err, checkErr)
}

// lockRows takes a transaction-scoped advisory lock on each row, named by the 64-bit
// FNV-1a hash of its identity, in the rows' order (sorted, so concurrent flushers
// lock in the same order; a deadlock all the same is retried). Rows whose hashes
// collide share a lock, which costs only waiting.
func lockRows(ctx context.Context, tx *gorm.DB, rows []*write) error {
	ids := make([]int64, len(rows))
	for i, w := range rows {
		h := fnv.New64a()
		h.Write([]byte(w.row))
		ids[i] = int64(h.Sum64())
	}
	_, err := tx.Statement.ConnPool.ExecContext(ctx,
		`SELECT pg_advisory_xact_lock(id) FROM unnest($1::bigint[]) WITH ORDINALITY AS t(id, n) ORDER BY n`, ids)
	if err != nil {
		return fmt.Errorf("writeback: lock %d rows: %w", len(rows), err)
	}
	return nil
}

// rowKey returns the key of the row whose value key is s, and the row's identity:
// its table and key values, without the schema version.
func rowKey(s string) (keys.Key, string, error) {
	sp, pk, err := keys.ParseKey(s)
	if err != nil {
		return keys.Key{}, "", fmt.Errorf("%w: row key: %v", ErrBadChange, err)
	}
	k := sp.Key(pk...)
	if k.Value() != s {
		return keys.Key{}, "", fmt.Errorf("%w: %q is not a row's value key", ErrBadChange, s)
	}
	return k, sp.Table() + "\x00" + strings.Join(pk, "\x00"), nil
}
