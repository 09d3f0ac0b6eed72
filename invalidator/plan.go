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
	// columns: the indexes in a relation of a lookup's columns, in the lookup's
	// order, or nil when the relation lacks one.
	columns map[lookupColumns][]int
}

type lookupColumns struct {
	rel    *cdc.Relation
	lookup keys.Lookup
}

// plan returns the keys to delete and the tables to flush for txs, under the versions
// and lookups a lists.
func (v *Invalidator) plan(txs []*cdc.Tx, a announced) plan {
	p := planner{v: v, a: a, flushed: make(map[string]bool), seen: make(map[string]bool)}
	for _, tx := range txs {
		for _, ch := range tx.Changes {
			p.change(ch)
		}
	}
	return plan{keys: append(p.rows, p.more...), rows: len(p.rows), flush: p.flush}
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
func (p *planner) change(ch cdc.Change) {
	table := keys.QualifiedTable(ch.Relation.Schema, ch.Relation.Name)
	vs, ls := p.a.versions[table], p.a.lookups[table]
	if len(vs) == 0 && len(ls) == 0 || p.flushed[table] {
		return // nothing of this table is cached, or all of it goes
	}
	if ch.Kind == cdc.Truncate || ch.Key == nil {
		p.flushTable(table)
		return
	}
	key, keyErr := canonical(ch.Relation, ch.Key)
	old, oldErr := canonical(ch.Relation, ch.OldKey)
	if keyErr != nil || oldErr != nil {
		p.v.log.Warn("cannot build the key of a changed row; invalidating its whole table",
			slog.String("table", table), slog.Any("error", keyErr), slog.Any("old_key_error", oldErr))
		p.flushTable(table)
		return
	}
	for _, ver := range vs {
		sp := p.v.space(table, ver)
		p.add(&p.rows, sp.Key(key...))
		if old != nil {
			p.add(&p.rows, sp.Key(old...))
		}
	}
	for _, vl := range ls {
		if err := p.lookup(table, ch, vl); err != nil {
			p.v.log.Warn("cannot name the lookup entries of a changed row; invalidating its whole table",
				slog.String("table", table), slog.String("lookup", vl.Lookup.String()), slog.Any("reason", err))
			p.flushTable(table)
			return
		}
	}
}

// lookup adds the entries of vl that ch's rows name: the new row's (which may have
// entered them: a row leaving an entry is caught by the check on read) and the old
// row's where the message holds them (which saves that check). It returns an error
// when the new row's values cannot be known: the table must be flushed.
func (p *planner) lookup(table string, ch cdc.Change, vl store.VersionLookup) error {
	idx := p.columnsOf(ch.Relation, vl.Lookup)
	if idx == nil {
		// The table had no such column when the row changed: the lookup's entries
		// belong to a schema version that no longer reads this table's rows by it.
		return nil
	}
	sp := p.v.space(table, vl.Version)
	if ch.Kind == cdc.Insert || ch.Kind == cdc.Update {
		vals, err := lookupValues(ch.Relation, idx, ch.New, ch.Old)
		if err != nil {
			return err
		}
		if vals != nil {
			p.add(&p.more, sp.LookupKey(vl.Lookup, vals...))
		}
	}
	if ch.Old.Len() > 0 {
		// The old row is an optimisation: values it lacks are left to the check.
		if vals, err := lookupValues(ch.Relation, idx, ch.Old, cdc.Row{}); err == nil && vals != nil {
			p.add(&p.more, sp.LookupKey(vl.Lookup, vals...))
		}
	}
	return nil
}

// columnsOf returns the indexes in rel.Columns of l's columns, in l's order, or nil
// when rel lacks one.
func (p *planner) columnsOf(rel *cdc.Relation, l keys.Lookup) []int {
	k := lookupColumns{rel, l}
	if idx, ok := p.columns[k]; ok {
		return idx
	}
	if p.columns == nil {
		p.columns = make(map[lookupColumns][]int)
	}
	var idx []int
	for _, name := range l.Columns() {
		i := slices.IndexFunc(rel.Columns, func(c cdc.Column) bool { return c.Name == name })
		if i < 0 {
			idx = nil
			break
		}
		idx = append(idx, i)
	}
	p.columns[k] = idx
	return idx
}

// lookupValues returns the canonical values of row's columns idx, as a lookup key takes
// them: each parsed as its column type's Kind, as the primary key's are (canonical).
// An unchanged TOAST value is taken from fallback (the old row) when it has it. It
// returns nil values when one is NULL (NULL names no entry), and an error when one is
// not in the message or not a valid value of its type.
func lookupValues(rel *cdc.Relation, idx []int, row, fallback cdc.Row) ([]string, error) {
	vals := make([]string, len(idx))
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
