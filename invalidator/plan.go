package invalidator

import (
	"fmt"
	"log/slog"
	"slices"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
)

// deleteBatch is how many keys Handle deletes in one pipeline: few enough for Redis to
// answer well within RedisTimeout, many enough that round trips cost little.
const deleteBatch = 1000

// deletesInFlight is how many of a transaction's delete pipelines may wait on Redis at
// once: while Redis works through one, the next is on its way, so that a large
// transaction is not a series of round trips.
const deletesInFlight = 4

// plan is what a batch of transactions asks of Redis: keys to delete (row keys, then
// lookup entries), each once, and tables to flush.
type plan struct {
	keys  []keys.Key
	rows  int // keys[:rows] are row keys, keys[rows:] lookup entries
	flush []keys.Space
}

// lookupKeys returns how many of keys[lo:hi] are lookup entries.
func (p plan) lookupKeys(lo, hi int) int { return max(0, hi-max(lo, p.rows)) }

// planner builds a plan, one change at a time.
type planner struct {
	v          *Invalidator
	a          announced
	rows, more []keys.Key // row keys; lookup entries
	flush      []keys.Space
	flushed    map[string]bool
	seen       map[string]bool
	// rels: what the plan needs of each relation, worked out at its first change.
	// last is the relation of the previous change, which the next one usually shares.
	rels map[*cdc.Relation]*relPlan
	last *relPlan
	// key, old and vals are reused for the values of each key: a key copies them.
	key, old, vals []string
}

// relPlan is what a plan needs of a relation, worked out once per plan rather than
// once per change: its table, the spaces its rows are cached in, how its key values
// are put in canonical order and form, and its lookups.
type relPlan struct {
	rel   *cdc.Relation
	table string
	// cached: something of the table is cached (a version or a lookup announced).
	cached bool
	spaces []keys.Space // one per version
	// order: for each canonical position, the index in Change.Key of its value (the
	// key columns sorted by name, keys.Order); kinds: the Kind of each Key value.
	order []int
	kinds []keys.Kind
	// lookups: the lookups of the table, each with its space and the indexes in
	// rel.Columns of its columns (nil when the relation lacks one).
	lookups []relLookup
}

type relLookup struct {
	vl  store.VersionLookup
	sp  keys.Space
	idx []int
}

// plan returns the keys to delete and the tables to flush for txs, under the versions
// and lookups a lists.
func (v *Invalidator) plan(txs []*cdc.Tx, a announced) plan {
	p := planner{v: v, a: a, flushed: make(map[string]bool), rels: make(map[*cdc.Relation]*relPlan)}
	if len(a.versions) > 0 || len(a.lookups) > 0 {
		n := 0
		for _, tx := range txs {
			n += len(tx.Changes)
		}
		p.seen = make(map[string]bool, n)
	}
	for _, tx := range txs {
		for i := range tx.Changes {
			p.change(&tx.Changes[i])
		}
	}
	return plan{keys: append(p.rows, p.more...), rows: len(p.rows), flush: p.flush}
}

// relation returns what the plan needs of rel.
func (p *planner) relation(rel *cdc.Relation) *relPlan {
	if p.last != nil && p.last.rel == rel {
		return p.last
	}
	rp, ok := p.rels[rel]
	if !ok {
		table := keys.QualifiedTable(rel.Schema, rel.Name)
		vs, ls := p.a.versions[table], p.a.lookups[table]
		rp = &relPlan{rel: rel, table: table, cached: len(vs) > 0 || len(ls) > 0}
		if rp.cached {
			for _, ver := range vs {
				rp.spaces = append(rp.spaces, p.v.space(table, ver))
			}
			cols := rel.KeyColumns()
			names := make([]string, len(cols))
			rp.kinds = make([]keys.Kind, len(cols))
			for i, c := range cols {
				names[i], rp.kinds[i] = c.Name, kindOf(c)
			}
			rp.order = keys.Order(names)
			for _, vl := range ls {
				rp.lookups = append(rp.lookups, relLookup{vl: vl, sp: p.v.space(table, vl.Version), idx: columnsOf(rel, vl.Lookup)})
			}
		}
		p.rels[rel] = rp
	}
	p.last = rp
	return rp
}

// canonical turns primary-key values in Postgres text, in column order, into the
// canonical values a key takes, in the order of their column names (keys.Order): the
// order the read side builds them in, whatever order the table or the struct declares.
// It appends them to buf[:0].
func (rp *relPlan) canonical(vals, buf []string) ([]string, error) {
	if vals == nil {
		return nil, nil
	}
	if len(rp.order) != len(vals) {
		return nil, fmt.Errorf("%d key values for %d key columns", len(vals), len(rp.order))
	}
	out := buf[:0]
	for _, i := range rp.order {
		s, err := keys.FromText(rp.kinds[i], vals[i])
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (p *planner) add(to *[]keys.Key, k keys.Key) {
	if !p.seen[k.Value()] {
		p.seen[k.Value()] = true
		*to = append(*to, k)
	}
}

func (p *planner) flushTable(table string) {
	p.flushed[table] = true
	// Every version shares the table's index, so any version names it.
	p.flush = append(p.flush, p.v.space(table, "any"))
}

// change adds what ch asks for: the keys of its row (new and old) under every version
// of its table, the entries its values name under every lookup of its table, or a
// flush of its table when it cannot name them.
func (p *planner) change(ch *cdc.Change) {
	rp := p.relation(ch.Relation)
	table := rp.table
	if !rp.cached || len(p.flushed) > 0 && p.flushed[table] {
		return // nothing of this table is cached, or all of it goes
	}
	if ch.Kind == cdc.Truncate || ch.Key == nil {
		p.flushTable(table)
		return
	}
	var keyErr, oldErr error
	p.key, keyErr = rp.canonical(ch.Key, p.key)
	p.old, oldErr = rp.canonical(ch.OldKey, p.old)
	if keyErr != nil || oldErr != nil {
		p.v.log.Warn("cannot build the key of a changed row; invalidating its whole table",
			slog.String("table", table), slog.Any("error", keyErr), slog.Any("old_key_error", oldErr))
		p.flushTable(table)
		return
	}
	for _, sp := range rp.spaces {
		p.add(&p.rows, sp.Key(p.key...))
		if p.old != nil {
			p.add(&p.rows, sp.Key(p.old...))
		}
	}
	for _, rl := range rp.lookups {
		if err := p.lookup(ch, rl); err != nil {
			p.v.log.Warn("cannot name the lookup entries of a changed row; invalidating its whole table",
				slog.String("table", table), slog.String("lookup", rl.vl.Lookup.String()), slog.Any("reason", err))
			p.flushTable(table)
			return
		}
	}
}

// lookup adds the entries of rl that ch's rows name: the new row's (which may have
// entered them: a row leaving an entry is caught by the check on read) and the old
// row's where the message holds them (which saves that check). It returns an error
// when the new row's values cannot be known: the table must be flushed.
func (p *planner) lookup(ch *cdc.Change, rl relLookup) error {
	if rl.idx == nil {
		// The table had no such column when the row changed: the lookup's entries
		// belong to a schema version that no longer reads this table's rows by it.
		return nil
	}
	if ch.Kind == cdc.Insert || ch.Kind == cdc.Update {
		vals, err := lookupValues(ch.Relation, rl.idx, ch.New, ch.Old, p.vals)
		if err != nil {
			return err
		}
		if vals != nil {
			p.vals = vals
			p.add(&p.more, rl.sp.LookupKey(rl.vl.Lookup, vals...))
		}
	}
	if ch.Old.Len() > 0 {
		// The old row is an optimisation: values it lacks are left to the check.
		if vals, err := lookupValues(ch.Relation, rl.idx, ch.Old, cdc.Row{}, p.vals); err == nil && vals != nil {
			p.vals = vals
			p.add(&p.more, rl.sp.LookupKey(rl.vl.Lookup, vals...))
		}
	}
	return nil
}

// columnsOf returns the indexes in rel.Columns of l's columns, in l's order, or nil
// when rel lacks one.
func columnsOf(rel *cdc.Relation, l keys.Lookup) []int {
	var idx []int
	for _, name := range l.Columns() {
		i := slices.IndexFunc(rel.Columns, func(c cdc.Column) bool { return c.Name == name })
		if i < 0 {
			return nil
		}
		idx = append(idx, i)
	}
	return idx
}

// lookupValues returns the canonical values of row's columns idx, as a lookup key takes
// them: each parsed as its column type's Kind, as the primary key's are (canonical).
// An unchanged TOAST value is taken from fallback (the old row) when it has it. It
// returns nil values when one is NULL (NULL names no entry), and an error when one is
// not in the message or not a valid value of its type. The values are buf's, grown as
// needed.
func lookupValues(rel *cdc.Relation, idx []int, row, fallback cdc.Row, buf []string) ([]string, error) {
	vals := slices.Grow(buf[:0], len(idx))[:len(idx)]
	var missing error
	for n, i := range idx {
		col := rel.Columns[i]
		v := cdc.Value{Kind: cdc.ValueNotSent} // a change without the row
		if i < row.Len() {
			v = row.Value(i)
		}
		if v.Kind == cdc.ValueUnchangedTOAST && fallback.Len() > i && fallback.Value(i).Kind == cdc.ValueText {
			v = fallback.Value(i)
		}
		switch v.Kind {
		case cdc.ValueNull:
			return nil, nil
		case cdc.ValueText:
			s, err := keys.FromText(kindOf(col), v.Text)
			if err != nil && missing == nil {
				missing = fmt.Errorf("column %s: %w", col.Name, err)
			}
			vals[n] = s
		default:
			if missing == nil {
				missing = fmt.Errorf("column %s: value %s", col.Name, v.Kind)
			}
		}
	}
	if missing != nil {
		return nil, missing
	}
	return vals, nil
}
