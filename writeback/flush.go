package writeback

import (
	"context"
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
	// abandoned is set once the write was fenced: it did not land within
	// LandingTimeout, and never will.
	abandoned bool
}

// flush applies one batch of journal entries:
//
//  1. decode the entries (see decodeBatch);
//  2. in one transaction, take the locks of the entries' rows and, holding them, read
//     the rows' state and sort the entries out by it (see sortOut): an entry is
//     applied only when its row's pending record holds its id; one whose write has
//     not landed yet is held for a later batch (fenced once LandingTimeout old);
//     every other one is superseded (or applied before: a replay); of the entries to
//     apply, keep per row the one with the highest id (coalescing), rows told apart
//     by table and key values, whatever the schema version of their key;
//  3. apply those and commit (see applyTx); after a failure caused by a row's data,
//     apply row by row and dead-letter the rows that keep failing;
//  4. delete the pending records of the applied rows that still hold their version,
//     and of the older writes of step 2 (under another schema version's key), then
//     acknowledge and delete every entry of the batch but those held: on a single
//     Redis in one round trip (see store.ClearAndAck).
//
// A crash between any two steps leaves the entries pending; whoever takes them up
// repeats the steps, and step 2 skips what step 4 already did. Applying a row twice
// writes the same values twice. It returns the entries held.
//
// Run does step 4 of a batch (settle) while the next batch goes through steps 1 to 3
// (applyBatch), so that Redis' part of one batch overlaps Postgres' part of the next.
// Step 2 of the next batch may thus read a row's state before the pending record of
// its write in the batch before is cleared: the record then holds that write's id, or
// a later write's. An entry is applied only when the record holds its own id, and the
// next batch's entries of that row are later writes or, when claimed from a stopped
// flusher, older ones; so the record decides as it would after the clear: a later
// write is applied, an older one superseded. The clear, in turn, deletes a record
// only while it holds the cleared write's id.
//
// Operations are bounded by their own timeouts, not by ctx, so that a batch under way
// completes when Run is stopped; ctx ends the waits between retries.
func (f *Flusher) flush(ctx context.Context, entries []store.JournalEntry) ([]store.JournalEntry, error) {
	a, err := f.applyBatch(ctx, entries)
	if err != nil {
		return nil, err
	}
	return a.held, f.settle(ctx, a)
}

// appliedBatch is a batch after its transaction (flush's steps 1 to 3): what step 4
// (settle) is left to do.
type appliedBatch struct {
	held  []store.JournalEntry // entries not landed yet, for a later batch
	dead  []*write             // to dead-letter
	clear []*write             // whose pending records to clear
	ids   map[string][]string  // by stream, the entries to acknowledge
}

// applyBatch is flush's steps 1 to 3.
func (f *Flusher) applyBatch(ctx context.Context, entries []store.JournalEntry) (appliedBatch, error) {
	if f.hooks.FailBatch != nil {
		if err := f.hooks.FailBatch(); err != nil {
			return appliedBatch{}, err
		}
	}
	op := context.WithoutCancel(ctx)
	b := f.decodeBatch(entries) // step 1
	var pre []store.RowState
	if f.hooks.NoRecheck && len(b.writes) > 0 {
		var err error
		ks, latest := writeKeys(b.writes)
		if pre, err = f.store.RowStates(op, ks, latest); err != nil {
			return appliedBatch{}, fmt.Errorf("writeback: check versions: %w", err)
		}
	}
	testhooks.Run(f.hooks.BeforeApply)
	s, applied, failed, err := f.apply(ctx, b.writes, pre) // steps 2 and 3
	if err != nil {
		return appliedBatch{}, err
	}
	f.stats.superseded.Add(uint64(s.superseded))
	for _, w := range s.abandoned {
		f.stats.abandoned.Add(1)
		f.log.Warn("writeback: gave up on a write that did not land within LandingTimeout",
			slog.String(attrKey, w.key.Value()), slog.String("entry", w.id))
	}
	for _, w := range b.writes {
		if !w.hold {
			b.ids[w.entry.Stream] = append(b.ids[w.entry.Stream], w.id)
		}
	}
	if len(applied) > 0 {
		f.stats.batches.Add(1)
		f.stats.applied.Add(uint64(len(applied)))
		testhooks.Run(f.hooks.AfterCommit)
	}
	return appliedBatch{held: s.held, dead: slices.Concat(b.dead, s.dead, failed), clear: slices.Concat(applied, s.older), ids: b.ids}, nil
}

// settle writes the batch's dead letters, then does flush's step 4.
func (f *Flusher) settle(ctx context.Context, a appliedBatch) error {
	testhooks.Run(f.hooks.BeforeSettle)
	if f.hooks.FailSettle != nil {
		if err := f.hooks.FailSettle(); err != nil {
			return err
		}
	}
	op := context.WithoutCancel(ctx)
	if err := f.deadLetter(op, a.dead); err != nil {
		return err
	}
	return f.clearAndAck(op, a.clear, a.ids)
}

// batch is a batch of journal entries decoded by decodeBatch.
type batch struct {
	ids    map[string][]string // by stream, the ids of the entries to acknowledge, once
	writes []*write            // the entries with a row key, each once
	dead   []*write            // entries without a row key, to dead-letter
}

// decodeBatch decodes a batch's entries (flush's step 1), each once: an entry may be
// claimed again while held.
func (f *Flusher) decodeBatch(entries []store.JournalEntry) batch {
	b := batch{ids: make(map[string][]string)}
	seen := make(map[string]bool, len(entries))
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
		b.writes = append(b.writes, w)
	}
	return b
}

// writeKeys returns the keys of the rows ws write, each once, and for each the id of
// its latest write in ws.
func writeKeys(ws []*write) ([]keys.Key, []string) {
	ks := make([]keys.Key, 0, len(ws))
	latest := make([]string, 0, len(ws))
	at := make(map[keys.Key]int, len(ws))
	for _, w := range ws {
		i, ok := at[w.key]
		switch {
		case !ok:
			at[w.key] = len(ks)
			ks = append(ks, w.key)
			latest = append(latest, w.id)
		case store.CompareIDs(w.id, latest[i]) > 0:
			latest[i] = w.id
		}
	}
	return ks, latest
}

// sorted is a batch's writes sorted out by sortOut.
type sorted struct {
	// rows holds the latest write of each row to apply, with a change.
	rows []*write
	// older holds writes superseded by a later one of the row in the batch that left
	// a pending record of their own: under another schema version's key.
	older []*write
	// dead holds the latest writes of rows that have no change (it could not be
	// decoded), to dead-letter.
	dead []*write
	// held holds the entries whose write has not landed yet.
	held []store.JournalEntry
	// abandoned holds the writes fenced because they did not land within
	// LandingTimeout; superseded counts the writes superseded or applied before.
	abandoned  []*write
	superseded int
}

// sortOut sorts a batch's writes out by their rows' states (the state of the row of
// key ks[i] is states[i]) and keeps the latest write of each row (see flush's step 2).
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
func (f *Flusher) sortOut(ctx context.Context, ws []*write, ks []keys.Key, states []store.RowState) (sorted, error) {
	var s sorted
	at := make(map[keys.Key]int, len(ks))
	for i, k := range ks {
		at[k] = i
	}
	live := make(map[*write]bool, len(ws))
	var fence []*write
	now := time.Now()
	for _, w := range ws {
		w.hold = false
		st := states[at[w.key]]
		switch {
		case w.abandoned:
			// fenced by an earlier attempt at this batch
		case st.Version == w.id:
			live[w] = true
		case st.Version != "" && store.CompareIDs(st.Version, w.id) > 0,
			st.Landed != "" && store.CompareIDs(st.Landed, w.id) >= 0,
			f.hooks.AssumeLanded:
			s.superseded++
		case now.Sub(entryTime(w.id)) < f.opts.LandingTimeout:
			w.hold = true
		default:
			fence = append(fence, w)
		}
	}
	if len(fence) > 0 {
		items := make([]store.Versioned, len(fence))
		for i, w := range fence {
			items[i] = store.Versioned{Key: w.key, Version: w.id}
		}
		fenced, err := f.store.FenceEntries(ctx, items)
		if err != nil {
			return s, fmt.Errorf("writeback: fence entries that did not land: %w", err)
		}
		for i, w := range fence {
			if fenced[i] {
				w.abandoned = true
			} else {
				w.hold = true
			}
		}
	}
	latest := make(map[string]*write)
	for _, w := range ws {
		switch {
		case w.abandoned:
			s.abandoned = append(s.abandoned, w)
			continue
		case w.hold:
			s.held = append(s.held, w.entry)
			continue
		case !live[w]:
			continue
		}
		if prev, ok := latest[w.row]; ok {
			s.superseded++
			if store.CompareIDs(w.id, prev.id) < 0 {
				s.older = append(s.older, w)
				continue
			}
			s.older = append(s.older, prev)
		}
		latest[w.row] = w
	}
	// An older write under the latest's key needs nothing: the latest replaced its
	// pending record. One under another schema version's key left a record of its own.
	s.older = slices.DeleteFunc(s.older, func(w *write) bool { return w.key == latest[w.row].key })
	for _, w := range latest {
		if w.change == nil {
			s.dead = append(s.dead, w)
		} else {
			s.rows = append(s.rows, w)
		}
	}
	slices.SortFunc(s.rows, func(a, b *write) int { return strings.Compare(a.row, b.row) })
	return s, nil
}

// entryTime returns the time of a journal entry's id: its milliseconds part.
func entryTime(id string) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return time.UnixMilli(n)
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

// clearAndAck deletes the pending records of writes applied, or superseded, if they
// still hold their version, and with each the row's cached value, fence and response
// epoch: readers go back to Postgres, which may hold the row in another form than the
// one written (char(n) padded, timestamps to the microsecond, defaults and triggers
// applied), as the invalidator's deletion of the commit would make them. Then it
// acknowledges the entries ids names (flush's step 4).
func (f *Flusher) clearAndAck(ctx context.Context, ws []*write, ids map[string][]string) error {
	items := make([]store.Versioned, len(ws))
	for i, w := range ws {
		items[i] = store.Versioned{Key: w.key, Version: w.id}
	}
	if f.hooks.ClearAny && len(items) > 0 {
		ks, latest := writeKeys(ws)
		states, err := f.store.RowStates(ctx, ks, latest)
		if err != nil {
			return err
		}
		for i := range items {
			items[i].Version = states[slices.Index(ks, items[i].Key)].Version
		}
	}
	if f.hooks.AfterClear == nil {
		if _, err := f.store.ClearAndAck(ctx, items, f.opts.Group, ids); err != nil {
			return fmt.Errorf("writeback: clear pending records and acknowledge: %w", err)
		}
		return nil
	}
	// The hook runs between the two steps, which are then two round trips.
	if _, err := f.store.ClearPending(ctx, items, true); err != nil {
		return fmt.Errorf("writeback: clear pending records: %w", err)
	}
	testhooks.Run(f.hooks.AfterClear)
	if err := f.store.AckJournals(ctx, f.opts.Group, ids); err != nil {
		return fmt.Errorf("writeback: acknowledge: %w", err)
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

// apply sorts the writes out and applies the rows to apply in one transaction (see
// applyTx), retrying failures that are not the data's fault. When the data is at
// fault it applies the rows one by one, so one bad row does not hold up the others,
// and returns the rows that failed MaxAttempts times. pre, if not nil, are the states
// of the writes' rows read before (testhooks.Flush.NoRecheck).
func (f *Flusher) apply(ctx context.Context, ws []*write, pre []store.RowState) (s sorted, applied, dead []*write, err error) {
	if len(ws) == 0 {
		return s, nil, nil, nil
	}
	bo := f.backoff()
	for {
		s, err = f.applyTx(ctx, ws, pre)
		if err == nil {
			return s, s.rows, nil, nil
		}
		if permanent(err) && len(s.rows) > 0 {
			if len(s.rows) > 1 {
				f.failed("apply batch; applying its rows one by one", err, slog.Int(attrRows, len(s.rows)))
			}
			break
		}
		f.failed("apply batch", err, slog.Int(attrRows, len(ws)))
		f.stats.retries.Add(1)
		if err := retry.Wait(ctx, bo); err != nil {
			return s, nil, nil, err
		}
	}
	// s is the batch's sorting out, made holding the rows' locks in the transaction
	// that failed; each row is sorted out again in its own.
	for _, w := range s.rows {
		bo := f.backoff()
		for {
			one, err := f.applyTx(ctx, []*write{w}, nil)
			if err == nil {
				applied = append(applied, one.rows...)
				s.superseded += one.superseded
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
				return s, nil, nil, err
			}
		}
	}
	return s, applied, dead, nil
}

// applyTx sorts the writes out and applies the rows to apply, in one transaction, and
// returns the sorting out: its rows were committed. When it fails after the writes
// were sorted out, the sorting out is returned with the error.
//
// The transaction first takes an advisory lock per row (see lockRows), then reads the
// rows' states and sorts the writes out (see sortOut), then runs the statements. A
// newer write of a row may be journaled and applied by another flusher at any time;
// committing an older one after it would put the older row in Postgres for good. A
// row whose pending record held the write's version once the lock was held cannot
// have a newer write applied before this commit: the newer write's flusher needs the
// lock, which it gets after this commit, and it reads its own row's state only after
// it got it. (testhooks.Flush.NoRecheck sorts the writes out by the states pre, read
// before the locks, to show that the test of that order can fail.)
//
// The locks are advisory, not only the rows' own, because a DELETE does not wait for
// an INSERT of the same key that has not committed: it deletes nothing and commits,
// and the insert's commit then brings back a row whose deletion was acknowledged.
func (f *Flusher) applyTx(ctx context.Context, ws []*write, pre []store.RowState) (sorted, error) {
	var s sorted
	op, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.opts.ApplyTimeout)
	defer cancel()
	ks, latest := writeKeys(ws)
	err := f.db.WithContext(op).Transaction(func(tx *gorm.DB) error {
		if err := lockRows(op, tx, ws); err != nil {
			return err
		}
		states := pre
		if states == nil {
			var err error
			if states, err = f.store.RowStates(op, ks, latest); err != nil {
				return fmt.Errorf("writeback: check versions: %w", err)
			}
		}
		var err error
		if s, err = f.sortOut(op, ws, ks, states); err != nil {
			return err
		}
		testhooks.Run(f.hooks.AfterSort)
		if len(s.rows) == 0 {
			return nil
		}
		changes := make([]*Change, len(s.rows))
		for i, w := range s.rows {
			changes[i] = w.change
		}
		if err := applyChanges(op, tx, changes); err != nil {
			return err
		}
		testhooks.Run(f.hooks.BeforeCommit)
		return nil
	})
	return s, err
}

// lockRows takes a transaction-scoped advisory lock on the row of each write, named by
// the 64-bit FNV-1a hash of its identity, in the order of the rows' identities (so
// concurrent flushers lock in the same order; a deadlock all the same is retried).
// Rows whose hashes collide share a lock, which costs only waiting.
func lockRows(ctx context.Context, tx *gorm.DB, ws []*write) error {
	rows := make([]string, len(ws))
	for i, w := range ws {
		rows[i] = w.row
	}
	slices.Sort(rows)
	rows = slices.Compact(rows)
	ids := make([]int64, len(rows))
	for i, r := range rows {
		h := fnv.New64a()
		h.Write([]byte(r))
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
