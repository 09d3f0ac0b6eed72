package readthrough

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"time"

	"gorm.io/gorm/clause"

	"github.com/pgcache/pgcache/internal/near"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
)

// GetMany returns the visible rows holding each of vals (as Get takes them), in the
// order of vals; values with no row are left out. The cached entries are read in one
// Redis round trip (with ModelOptions.Near, those the near tier holds from it) and the
// rows they name in one multi-get (GetMany's path). The values that miss are filled
// together, as Get fills one: their entries' leases in one round trip, one query for
// them all (WHERE col IN (...), or (a, b) IN (...) for a composite lookup), and the
// entries stored in one round trip, fenced as in Get; so N misses cost three round
// trips and one query, not 3N and N. While the model has
// missed lately (as Get's combined read) the entries are not read first: the leases'
// round trip returns those cached, so misses cost two round trips. A value whose
// lease another reader holds, or whose entry is undecodable, takes Get's path. Inside
// a transaction, unscoped, or with Redis failing, the values are read from Postgres
// in one query and nothing is cached.
func (u *UniqueLookup[T]) GetMany(ctx context.Context, vals ...any) ([]T, error) {
	if u.err != nil {
		return nil, u.err
	}
	r := u.r
	qs := make([]lookupQuery, len(vals))
	for i, v := range vals {
		q, err := r.query(u.def, u.perm, v)
		if err != nil {
			return nil, err
		}
		qs[i] = q
	}
	if dependencyRecorder(ctx) != nil { // deps.go
		ks := make([]keys.Key, len(qs))
		for i, q := range qs {
			ks[i] = q.key
		}
		r = r.recorded(ctx, ks...)
	}
	rows := make([]*T, len(vals))
	if r.direct() {
		if err := r.uniqueManyDirect(ctx, qs, all(len(qs)), rows); err != nil {
			return nil, err
		}
		return collect(rows), nil
	}
	missing, rest := all(len(qs)), []int(nil)
	if !r.combined(ctx) { // hotkey.go
		var err error
		if missing, rest, err = r.uniqueManyCached(ctx, qs, rows); err != nil {
			return nil, err
		}
	}
	if len(missing) > 0 {
		held, err := r.uniqueManyMiss(ctx, qs, missing, rows)
		if err != nil {
			return nil, err
		}
		rest = append(rest, held...)
	}
	for _, i := range rest {
		row, ok, err := u.Get(ctx, vals[i])
		if err != nil {
			return nil, err
		}
		if ok {
			rows[i] = &row
		}
	}
	return collect(rows), nil
}

// uniqueManyCached answers the queries whose entries are cached and fresh: from the
// near tier what it holds (a model with ModelOptions.Near), the rest read from Redis
// in one round trip, and kept in the near tier as Get keeps an entry. It returns the
// queries with no entry (missing, a stale entry being deleted) and those to leave to
// Get's path (rest: an undecodable entry, which Get deletes and counts). With Redis
// failing it reads every query from Postgres, as Get does.
func (r *Repository[T]) uniqueManyCached(ctx context.Context, qs []lookupQuery, rows []*T) (missing, rest []int, err error) {
	nr := newNamedRows(len(qs))
	var ask []int // the queries whose entry is read from Redis
	var ks []keys.Key
	var tickets []near.Ticket // with a near tier: taken before the read, by ask
	for i, q := range qs {
		if entry, got, hit := r.nearLookupGet(q.key); hit {
			r.uniqueHit(nr, q, i, entry, got)
			continue
		}
		ask, ks = append(ask, i), append(ks, q.key)
		if r.near != nil {
			tickets = append(tickets, r.nearTicket(q.key))
		}
	}
	var read [][]byte
	var ttls []time.Duration
	switch {
	case len(ks) == 0:
	case r.near != nil:
		read, ttls, err = r.store.GetManyWithTTL(ctx, ks)
	default:
		read, err = r.store.GetMany(ctx, ks)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err() // the caller gave up: not Redis' failure
		}
		r.redisFailed(err)
		return nil, nil, r.uniqueManyDirect(ctx, qs, all(len(qs)), rows)
	}
	for j, i := range ask {
		e := read[j]
		if e == nil {
			missing = append(missing, i)
			continue
		}
		got, err := r.parseLookupEntry(keys.Unique, e)
		if err != nil {
			rest = append(rest, i)
			continue
		}
		if ttls != nil {
			r.nearLookupStore(ctx, tickets[j], ks[j], e, got, ttls[j])
		}
		r.uniqueHit(nr, qs[i], i, e, got)
	}
	stale, err := r.uniqueManyRows(ctx, qs, nr, rows)
	return append(missing, stale...), rest, err
}

// namedRows are the entries of a unique GetMany's queries that name a row, for
// uniqueManyRows to read the rows: query idx[n]'s entry, entries[idx[n]], names the
// row of id ids[n].
type namedRows struct {
	entries [][]byte // by query
	idx     []int
	ids     []any
}

func newNamedRows(queries int) *namedRows {
	return &namedRows{entries: make([][]byte, queries)}
}

// add records that query i's entry names the row of id id.
func (nr *namedRows) add(i int, entry []byte, id any) {
	nr.entries[i] = entry
	nr.idx, nr.ids = append(nr.idx, i), append(nr.ids, id)
}

// uniqueHit answers query q (the i-th) from its cached entry, parsed as got: counted
// as Get counts a hit, and the row it names (if any) recorded in nr.
func (r *Repository[T]) uniqueHit(nr *namedRows, q lookupQuery, i int, entry []byte, got []any) {
	r.lookupCount(q, true)
	if len(got) == 1 {
		nr.add(i, entry, got[0])
	}
}

// uniqueManyRows reads the rows nr names through GetMany and puts those that still
// hold their values into rows. It returns the queries whose entry was stale, deleted.
func (r *Repository[T]) uniqueManyRows(ctx context.Context, qs []lookupQuery, nr *namedRows, rows []*T) (stale []int, err error) {
	if len(nr.idx) == 0 {
		return nil, nil
	}
	found, err := r.GetMany(ctx, nr.ids...)
	if err != nil {
		return nil, err
	}
	byKey, err := r.byRowKey(ctx, found)
	if err != nil {
		return nil, err
	}
	for n, i := range nr.idx {
		k, err := r.model.key(nr.ids[n])
		if err != nil {
			return nil, err
		}
		if row := byKey[k]; row != nil && (r.matches(ctx, qs[i], row) || testhooks.Unchecked(ctx)) {
			rows[i] = row
			continue
		}
		r.staleLookup(ctx, qs[i], nr.entries[i])
		stale = append(stale, i)
	}
	return stale, nil
}

// uniqueManyDirect reads the queries idx from Postgres in one query, caching nothing,
// as uniqueDirect does one.
func (r *Repository[T]) uniqueManyDirect(ctx context.Context, qs []lookupQuery, idx []int, rows []*T) error {
	r.unrecordable(ctx) // deps.go
	byKey, placed, err := r.loadUniqueMany(ctx, qs, idx)
	if err != nil {
		return err
	}
	if !placed {
		// A row the values' canonical forms do not name: each value on its own.
		for _, i := range idx {
			row, ok, err := r.uniqueDirect(ctx, qs[i])
			if err != nil {
				return err
			}
			if ok {
				rows[i] = &row
			}
		}
		return nil
	}
	for _, i := range idx {
		if row := byKey[qs[i].key]; row != nil {
			rows[i] = row
		}
	}
	return nil
}

// uniqueManyMiss fills the entries of the queries missing, which Redis did not hold
// when read (or were not read: see GetMany), as fillLookup fills one: their leases
// taken in one round trip (announcing the lookup in the lookup registry and the
// entries in the table's index before any lease exists), one query for the leased
// values, and the entries stored in one round trip, each only if its lease survived.
// An entry the lease finds cached is answered as uniqueManyCached answers one. It puts
// the rows into rows and returns the queries to leave to Get's path: those whose
// lease another reader holds (Get waits for its fill), and those whose entry was
// found undecodable or stale.
func (r *Repository[T]) uniqueManyMiss(ctx context.Context, qs []lookupQuery, missing []int, rows []*T) (held []int, err error) {
	// One lease per entry: a value asked for twice shares it.
	slots := make(map[keys.Key][]int, len(missing))
	var ks []keys.Key
	for _, i := range missing {
		k := qs[i].key
		if slots[k] == nil {
			ks = append(ks, k)
		}
		slots[k] = append(slots[k], i)
	}
	if testhooks.Unfenced(ctx) {
		for _, i := range missing {
			r.lookupCount(qs[i], false)
		}
		return nil, r.uniqueManyUnfenced(ctx, qs, ks, slots, rows)
	}
	leases, err := r.store.TakeLeases(ctx, r.reg.WithLookup(qs[missing[0]].def.id), ks, r.opts.FenceDuration)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err := r.fallBack(err); err != nil {
			return nil, err
		}
		return nil, r.uniqueManyDirect(ctx, qs, missing, rows)
	}
	var leased []int // indexes of ks
	found := newNamedRows(len(qs))
	for n, l := range leases {
		switch l.State {
		case store.Acquired:
			leased = append(leased, n)
			continue
		case store.Found:
			got, err := r.parseLookupEntry(keys.Unique, l.Value)
			if err != nil {
				break // Get deletes and counts it
			}
			for _, i := range slots[ks[n]] {
				r.uniqueHit(found, qs[i], i, l.Value, got)
			}
			continue
		}
		held = append(held, slots[ks[n]]...)
	}
	if len(leased) > 0 {
		again, err := r.fillUniqueMany(ctx, qs, ks, slots, leases, leased, rows)
		if err != nil {
			return nil, err
		}
		held = append(held, again...)
	}
	stale, err := r.uniqueManyRows(ctx, qs, found, rows)
	return append(held, stale...), err
}

// fillUniqueMany loads the leased entries' rows in one query and stores the entries
// in one round trip. The rows loaded are current (read after the leases were taken,
// so after the call began) and are the caller's, as a fill's rows are its own
// caller's in Get; with a dependency recorder, the rows are read through GetMany
// instead, which records them. again are the queries to leave to Get's path.
func (r *Repository[T]) fillUniqueMany(ctx context.Context, qs []lookupQuery, ks []keys.Key, slots map[keys.Key][]int, leases []store.Lease, leased []int, rows []*T) (again []int, ferr error) {
	// The leases are given back or filled even if the caller gives up: a lease left
	// behind makes the next readers of its entry wait for it to expire.
	rctx := context.WithoutCancel(ctx)
	release := func(ns ...int) {
		for _, n := range ns {
			if err := r.store.Release(rctx, ks[n], leases[n].Token); err != nil {
				r.redisFailed(err)
			}
		}
	}
	ctx, end := r.startOp(ctx, OpFill)
	idx := make([]int, len(leased))
	for j, n := range leased {
		idx[j] = slots[ks[n]][0]
		testhooks.BeforeLoad(ctx, ks[n].Value())
	}
	byKey, placed, err := r.loadUniqueMany(ctx, qs, idx)
	if err != nil || placed {
		// Counted as Get counts a miss it fills; values left to Get are counted there.
		for _, n := range leased {
			for _, i := range slots[ks[n]] {
				r.lookupCount(qs[i], false)
			}
		}
	}
	if err != nil {
		release(leased...)
		end(OutcomeError, err)
		return nil, err
	}
	if !placed {
		release(leased...)
		end(OutcomeUncached, nil)
		// A row the values' canonical forms do not name: each value on its own.
		for _, n := range leased {
			again = append(again, slots[ks[n]]...)
		}
		return again, nil
	}
	for _, n := range leased {
		testhooks.AfterLoad(ctx, ks[n].Value())
	}
	items := make([]store.FillItem, 0, len(leased))
	nr := newNamedRows(len(qs))
	for _, n := range leased {
		var loaded []T
		if row := byKey[ks[n]]; row != nil {
			loaded = []T{*row}
		}
		entry, err := r.lookupEntry(ctx, keys.Unique, loaded)
		if err != nil {
			release(leased...)
			end(OutcomeError, err)
			return nil, err
		}
		for _, i := range slots[ks[n]] {
			switch {
			case len(loaded) == 0:
			case recording(ctx):
				id, err := r.parseLookupEntry(keys.Unique, entry)
				if err != nil {
					release(leased...)
					end(OutcomeError, err)
					return nil, err
				}
				nr.add(i, entry, id[0])
			default:
				rows[i] = &loaded[0]
			}
		}
		if ttl, cache := r.ttl(entry); cache {
			items = append(items, store.FillItem{Key: ks[n], Token: leases[n].Token, Entry: entry, TTL: ttl})
		} else {
			release(n)
		}
	}
	stored, err := r.storeFills(rctx, items)
	end(fillManyOutcome(stored, err), err)
	return r.uniqueManyRows(ctx, qs, nr, rows)
}

// uniqueManyUnfenced is uniqueManyMiss as a cache without fencing does it (plain SETs,
// no leases), for the tests that show what fencing prevents.
func (r *Repository[T]) uniqueManyUnfenced(ctx context.Context, qs []lookupQuery, ks []keys.Key, slots map[keys.Key][]int, rows []*T) error {
	idx := make([]int, len(ks))
	for n, k := range ks {
		idx[n] = slots[k][0]
		testhooks.BeforeLoad(ctx, k.Value())
	}
	byKey, _, err := r.loadUniqueMany(ctx, qs, idx)
	if err != nil {
		return err
	}
	for _, k := range ks {
		testhooks.AfterLoad(ctx, k.Value())
		var loaded []T
		if row := byKey[k]; row != nil {
			loaded = []T{*row}
			for _, i := range slots[k] {
				rows[i] = row
			}
		}
		entry, err := r.lookupEntry(ctx, keys.Unique, loaded)
		if err != nil {
			return err
		}
		if ttl, cache := r.ttl(entry); cache {
			if err := r.store.FillUnfenced(ctx, k, entry, ttl); err != nil {
				return err
			}
			r.stats.fills.Add(1)
		}
	}
	return nil
}

// loadUniqueMany reads the visible rows holding the values of the queries idx (of one
// unique lookup) in one query, in the repository's scope, and returns them by the key
// of the entry their values name. placed is false when a row loaded names none of the
// queries' entries (the column compares values as their canonical forms do not, so
// the row cannot be matched to a value), or when more rows than values hold them (a
// partial unique index: reading at most one row more than values, the query never
// loads them all): the caller then asks value by value, each read stopping at two rows
// as Get's does. Two rows holding one query's values are ErrNotUnique, as in
// loadByValues.
func (r *Repository[T]) loadUniqueMany(ctx context.Context, qs []lookupQuery, idx []int) (byKey map[keys.Key]*T, placed bool, err error) {
	def := qs[idx[0]].def
	ctx, cancel := context.WithTimeout(ctx, r.opts.LoadTimeout)
	defer cancel()
	r.stats.loads.Add(1)
	db := r.db.WithContext(ctx).Model(new(T))
	if len(def.fields) == 1 {
		vals := make([]any, len(idx))
		for n, i := range idx {
			vals[n] = qs[i].vals[0]
		}
		db = db.Where(clause.IN{Column: clause.Column{Table: clause.CurrentTable, Name: def.fields[0].DBName}, Values: vals})
	} else {
		args := make([]any, 0, len(def.fields)+1)
		for _, f := range def.fields {
			args = append(args, clause.Column{Table: clause.CurrentTable, Name: f.DBName})
		}
		tuples := make([][]any, len(idx))
		for n, i := range idx {
			tuples[n] = qs[i].vals
		}
		args = append(args, tuples)
		db = db.Where("("+strings.TrimSuffix(strings.Repeat("?,", len(def.fields)), ",")+") IN ?", args...)
	}
	for _, c := range r.model.lookups.orderBy {
		db = db.Order(clause.OrderByColumn{Column: clause.Column{Table: clause.CurrentTable, Name: c}})
	}
	var loaded []T
	if err := db.Limit(len(idx) + 1).Find(&loaded).Error; err != nil {
		return nil, false, fmt.Errorf("readthrough: %s lookup %s of %s, %d values: %w", def.id.Kind(), def.id, r.model.schema.Name, len(idx), err)
	}
	if len(loaded) > len(idx) {
		return nil, false, nil // some value is held by several rows: value by value
	}
	asked := make(map[keys.Key]lookupQuery, len(idx))
	for _, i := range idx {
		asked[qs[i].key] = qs[i]
	}
	byKey = make(map[keys.Key]*T, len(loaded))
	for n := range loaded {
		k, ok, err := r.rowLookupKey(ctx, def, reflect.ValueOf(&loaded[n]).Elem())
		q, isAsked := asked[k]
		if err != nil || !ok || !isAsked {
			return nil, false, nil // a row no value's canonical form names: value by value
		}
		if byKey[k] != nil {
			return nil, false, fmt.Errorf("%w: %s by %v: at least two visible rows hold the values (a partial unique index?): none is returned", ErrNotUnique, r.model.schema.Name, q.canon)
		}
		byKey[k] = &loaded[n]
	}
	return byKey, true, nil
}
