package readthrough

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"time"

	"gorm.io/gorm/clause"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
)

// GetMany returns the rows with these ids that exist, in the order of ids; ids with no
// row are left out (match rows to ids by their primary key). It makes one Redis round
// trip for all ids, one more to take leases on the misses, one query
// (WHERE pk IN (...)) for the rows it leased, and one round trip to store them, fenced
// as in Get; while the model has missed lately, the first two round trips are one
// (getManyCombined). Misses whose lease another reader holds wait for that fill as in
// Get.
func (r *Repository[T]) GetMany(ctx context.Context, ids ...any) ([]T, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	r = r.recordedIDs(ctx, ids...) // deps.go
	start, t0 := r.flights.clock.Load(), r.readStart()
	ks := make([]keys.Key, len(ids))
	for i, id := range ids {
		k, err := r.model.key(id)
		if err != nil {
			return nil, err
		}
		ks[i] = k
	}
	rows := make([]*T, len(ids)) // nil: absent
	if !r.inTx && r.combined(ctx) {
		return r.getManyCombined(ctx, start, t0, ids, ks, rows)
	}
	var entries [][]byte
	var nf *nearFetch
	if !r.inTx {
		var err error
		if entries, nf, err = r.fetchEntries(ctx, ks, rows); err != nil {
			defer r.observeRead(ctx, t0, OutcomeError)
			if err := r.fallBack(err); err != nil {
				return nil, err
			}
		}
	}
	if entries == nil {
		// In a transaction, or Redis failed: Postgres alone.
		loaded, err := r.loadMany(ctx, ids)
		if err != nil {
			return nil, err
		}
		if err := r.place(ctx, loaded, ks, all(len(ids)), rows); err != nil {
			return nil, err
		}
		return collect(rows), nil
	}

	var missing []int
	for i, e := range entries {
		if nf.hit(i) {
			continue
		}
		if e == nil {
			missing = append(missing, i)
			continue
		}
		row, ok, err := r.cachedRow(ctx, ks[i], ids[i], e)
		if err != nil {
			missing = append(missing, i)
			continue
		}
		if nf != nil {
			r.nearStore(ctx, nf.tickets[i], ks[i], e, nf.ttls[i])
		}
		if ok {
			rows[i] = &row
		}
	}
	if len(missing) > 0 {
		r.stats.misses.Add(uint64(len(missing)))
		r.flights.missed()
		defer r.observeRead(ctx, t0, OutcomeMiss)
		if err := r.fillMany(ctx, start, ids, ks, missing, rows); err != nil {
			return nil, err
		}
		return collect(rows), nil
	}
	r.flights.hit()
	if r.cache.opts.Observer != nil {
		r.observeRead(ctx, t0, nf.outcome())
	}
	return collect(rows), nil
}

// getManyCombined is GetMany while the model misses (see flights.combine): one
// round trip reads every row or takes its lease (store.TakeLeases answers a cached or
// pending row with its entry, as store.ReadOrLease does for Get), then one query for
// the leased rows and one round trip to store them. A miss costs two round trips, not
// three; a hit costs the registry and index writes of the lease pipeline, which is
// why the model reads with MGET again once it hits.
func (r *Repository[T]) getManyCombined(ctx context.Context, start uint64, t0 time.Time, ids []any, ks []keys.Key, rows []*T) ([]T, error) {
	m := misses{idx: all(len(ids)), ids: ids, keys: ks}
	leases, err := r.store.TakeLeases(ctx, r.reg, ks, r.opts.FenceDuration)
	if err != nil {
		defer r.observeRead(ctx, t0, OutcomeError)
		if err := r.leasesFailed(ctx, err, m, ks, rows); err != nil {
			return nil, err
		}
		return collect(rows), nil
	}
	var missing []int
	for j, l := range leases {
		if l.State != store.Found {
			missing = append(missing, j)
		}
	}
	if len(missing) == 0 {
		r.flights.hit()
		defer r.observeRead(ctx, t0, OutcomeHit)
	} else {
		r.stats.misses.Add(uint64(len(missing)))
		r.flights.missed()
		defer r.observeRead(ctx, t0, OutcomeMiss)
		var end func(Outcome, error)
		ctx, end = r.startOp(ctx, OpMiss)
		defer func() { end(missManyOutcome(rows, missing, err), err) }()
	}
	if err = r.resolveLeases(ctx, start, m, leases, rows); err != nil {
		return nil, err
	}
	for j, l := range leases {
		switch {
		case l.State != store.Found:
		case rows[j] != nil:
			r.stats.hits.Add(1)
		default:
			r.stats.negativeHits.Add(1)
		}
	}
	return collect(rows), nil
}

func collect[T any](rows []*T) []T {
	out := make([]T, 0, len(rows))
	for _, row := range rows {
		if row != nil {
			out = append(out, *row)
		}
	}
	return out
}

func all(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// fillMany resolves the missing ids into rows: leases in one round trip, one query for
// the leased ids, fills in one round trip, and the single-row path for ids whose lease
// another reader holds.
func (r *Repository[T]) fillMany(ctx context.Context, start uint64, ids []any, ks []keys.Key, missing []int, rows []*T) (err error) {
	ctx, end := r.startOp(ctx, OpMiss)
	defer func() { end(missManyOutcome(rows, missing, err), err) }()
	m := misses{idx: missing, ids: pick(ids, missing), keys: make([]keys.Key, len(missing))}
	for j, i := range missing {
		m.keys[j] = ks[i]
	}
	leases, err := r.store.TakeLeases(ctx, r.reg, m.keys, r.opts.FenceDuration)
	if err != nil {
		return r.leasesFailed(ctx, err, m, ks, rows)
	}
	return r.resolveLeases(ctx, start, m, leases, rows)
}

// leasesFailed answers m when taking its leases failed with err: err where reads must
// not fall back to Postgres (see fallBack), else m's rows loaded and not cached.
func (r *Repository[T]) leasesFailed(ctx context.Context, err error, m misses, ks []keys.Key, rows []*T) error {
	if err := r.fallBack(err); err != nil {
		return err
	}
	loaded, err := r.loadMany(ctx, m.ids)
	if err != nil {
		return err
	}
	return r.place(ctx, loaded, ks, m.idx, rows)
}

// resolveLeases puts the rows of m into rows: those leasing found (cached or pending),
// those it leased, loaded in one query and stored in one round trip, and those whose
// lease another reader holds, through the single-row path, which waits for its fill.
func (r *Repository[T]) resolveLeases(ctx context.Context, start uint64, m misses, leases []store.Lease, rows []*T) error {
	leased, held := r.sortLeases(ctx, m, leases, rows)
	if len(leased) > 0 {
		if err := r.fillManyLeased(ctx, m, leases, leased, rows); err != nil {
			return err
		}
	}
	for _, j := range held {
		row, ok, err := r.miss(ctx, start, m.keys[j], m.ids[j], false)
		if err != nil {
			return err
		}
		if ok {
			rows[m.idx[j]] = &row
		}
	}
	return nil
}

// misses are the ids of a GetMany that Redis did not answer; j indexes them.
type misses struct {
	idx  []int      // idx[j] is the miss's index in the call's ids and rows
	ids  []any      // its id
	keys []keys.Key // its key
}

// sortLeases puts the rows that turned up while leasing into rows and returns the misses
// to load under the leases taken (leased) and those to leave to the single-row path,
// which waits for another reader's fill (held).
func (r *Repository[T]) sortLeases(ctx context.Context, m misses, leases []store.Lease, rows []*T) (leased, held []int) {
	for j, l := range leases {
		switch l.State {
		case store.Found:
			if inner, mine := r.open(l.Value); mine {
				if row, ok, err := r.flightRow(ctx, m.keys[j], m.ids[j], inner); err == nil {
					if ok {
						rows[m.idx[j]] = &row
					}
					continue
				}
			}
			// Undecodable, or another version's pending write: the single-row path waits.
			held = append(held, j)
		case store.Acquired:
			leased = append(leased, j)
		default:
			held = append(held, j)
		}
	}
	return leased, held
}

// fillManyLeased loads the leased misses in one query, puts them into rows and stores them
// in one round trip.
func (r *Repository[T]) fillManyLeased(ctx context.Context, m misses, leases []store.Lease, leased []int, rows []*T) error {
	ctx, end := r.startOp(ctx, OpFill)
	byKey, err := r.loadLeased(ctx, m, leased)
	if err != nil {
		r.release(ctx, m, leases, leased...)
		end(OutcomeError, err)
		return err
	}
	for _, j := range leased {
		testhooks.AfterLoad(ctx, m.keys[j].Value())
	}
	items := make([]store.FillItem, 0, len(leased))
	for _, j := range leased {
		row := byKey[m.keys[j]]
		if row != nil && r.visible(ctx, row) {
			rows[m.idx[j]] = row
		}
		entry, err := r.encode(ctx, row, row != nil)
		if err != nil {
			// Served as loaded, uncached; the other rows are stored.
			r.uncacheable(err)
			r.release(ctx, m, leases, j)
			continue
		}
		ttl, cache := r.ttl(entry)
		if !cache {
			r.release(ctx, m, leases, j)
			continue
		}
		items = append(items, store.FillItem{Key: m.keys[j], Token: leases[j].Token, Entry: r.seal(entry), TTL: ttl})
	}
	stored, err := r.storeFills(ctx, items)
	end(fillManyOutcome(stored, err), err)
	return nil
}

// loadLeased reads the leased misses from Postgres in one query, by key.
func (r *Repository[T]) loadLeased(ctx context.Context, m misses, leased []int) (map[keys.Key]*T, error) {
	lids := make([]any, len(leased))
	for n, j := range leased {
		lids[n] = m.ids[j]
	}
	// Cached as Postgres holds them, soft-deleted rows included (see softdelete.go).
	loaded, err := r.all().loadMany(ctx, lids)
	if err != nil {
		return nil, err
	}
	return r.byRowKey(ctx, loaded)
}

// byRowKey returns rows by their keys.
func (r *Repository[T]) byRowKey(ctx context.Context, rows []T) (map[keys.Key]*T, error) {
	byKey := make(map[keys.Key]*T, len(rows))
	for n := range rows {
		k, err := r.model.rowKey(ctx, reflect.ValueOf(&rows[n]).Elem())
		if err != nil {
			return nil, err
		}
		byKey[k] = &rows[n]
	}
	return byKey, nil
}

// release gives back the leases of rows fillManyLeased is not storing, so that the next
// read of each loads it at once instead of waiting for a fill that never comes.
func (r *Repository[T]) release(ctx context.Context, m misses, leases []store.Lease, js ...int) {
	for _, j := range js {
		if err := r.store.Release(ctx, m.keys[j], leases[j].Token); err != nil {
			r.redisFailed(err)
		}
	}
}

// place puts rows loaded without leases into their slots.
func (r *Repository[T]) place(ctx context.Context, loaded []T, ks []keys.Key, missing []int, rows []*T) error {
	slots := make(map[keys.Key][]int, len(missing))
	for _, i := range missing {
		slots[ks[i]] = append(slots[ks[i]], i)
	}
	for n := range loaded {
		k, err := r.model.rowKey(ctx, reflect.ValueOf(&loaded[n]).Elem())
		if err != nil {
			return err
		}
		for _, i := range slots[k] {
			rows[i] = &loaded[n]
		}
	}
	return nil
}

func pick(ids []any, idx []int) []any {
	out := make([]any, len(idx))
	for j, i := range idx {
		out[j] = ids[i]
	}
	return out
}

// loadMany reads rows by primary key in one query, bypassing the cache.
func (r *Repository[T]) loadMany(ctx context.Context, ids []any) ([]T, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.LoadTimeout)
	defer cancel()
	r.stats.loads.Add(1)
	var rows []T
	q := r.db.WithContext(ctx).Model(new(T))
	if len(r.model.pk) == 1 {
		q = q.Where(clause.IN{Column: clause.Column{Table: clause.CurrentTable, Name: r.model.pk[0].DBName}, Values: ids})
	} else {
		cols := make([]any, 0, len(r.model.pk)+1)
		for _, f := range r.model.pk {
			cols = append(cols, clause.Column{Table: clause.CurrentTable, Name: f.DBName})
		}
		tuples := make([][]any, len(ids))
		for i, id := range ids {
			vals, err := r.idValues(id)
			if err != nil {
				return nil, err
			}
			tuples[i] = vals
		}
		cols = append(cols, tuples)
		placeholders := "(" + strings.TrimSuffix(strings.Repeat("?,", len(r.model.pk)), ",") + ") IN ?"
		q = q.Where(placeholders, cols...)
	}
	if err := q.Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("readthrough: load %d %s rows: %w", len(ids), r.model.schema.Name, err)
	}
	return rows, nil
}

// storeFills stores the fills of items in one round trip (store.FillMany) and counts
// them: stored, or refused because their lease was voided.
func (r *Repository[T]) storeFills(ctx context.Context, items []store.FillItem) ([]bool, error) {
	stored, err := r.store.FillMany(ctx, items)
	if err != nil {
		r.redisFailed(err)
	}
	for _, ok := range stored {
		if ok {
			r.stats.fills.Add(1)
		} else {
			r.stats.fillsRefused.Add(1)
		}
	}
	return stored, err
}
