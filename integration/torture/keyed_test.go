package torture

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/pgcache/pgcache/readthrough"
)

// KeyedItem is read by id, by its unique code and by its group (a has-many list), and
// written by raw SQL only, by one writer in the test: swaps of the codes of two rows
// in one transaction, moves between groups, and value writes, each bumping Ver once
// per row. The set of codes never changes, so a lookup by any of them finds a row.
// The table keeps the default replica identity: a change carries no old values, so
// only the check on read keeps an entry from naming a row that left it.
type KeyedItem struct {
	ID   int64  `gorm:"primaryKey"`
	Code string `gorm:"uniqueIndex;not null"`
	Grp  int64  `gorm:"index;not null"`
	Ver  int64
	Val  int64
}

const (
	keyedTable = "keyed_items"
	nKeyed     = 24
	nGroups    = 4
)

// keyedOptions registers the lookups every reader of keyed items uses.
func keyedOptions() readthrough.ModelOptions {
	return readthrough.ModelOptions{TTL: time.Hour, WaitTimeout: 200 * time.Millisecond,
		Unique: [][]string{{"Code"}}, Lists: [][]string{{"Grp"}}}
}

// keyedCode is the code row id starts with; swaps permute them.
func keyedCode(n int64) string { return fmt.Sprintf("k%02d", n) }

// keyedSeed inserts the keyed items at version 1 and records them in h.
func keyedSeed(db *gorm.DB, h *history, at time.Time) error {
	if err := db.Exec(`INSERT INTO keyed_items (id, code, grp, ver, val)
		SELECT g, 'k' || lpad(g::text, 2, '0'), g % ?, 1, 0 FROM generate_series(1, ?) g`, nGroups, nKeyed).Error; err != nil {
		return err
	}
	for id := int64(1); id <= nKeyed; id++ {
		h.committedKeyed(id, commit{ver: 1, at: at, begin: at, code: keyedCode(id), grp: id % nGroups})
	}
	return nil
}

// found is a row a lookup returned, at its version.
type found struct{ id, ver int64 }

// lookupRead is a read of keyed items by code (byCode) or by group, with the rows it
// returned (none: no row for the code, or an empty group) and its window.
type lookupRead struct {
	byCode     bool
	code       string
	grp        int64
	start, end time.Time // before it began, after it returned
	rows       []found
}

// version returns the recorded commit of r at ver.
func (h *history) version(r row, ver int64) (commit, bool) {
	cs := h.commits[r]
	i, ok := slices.BinarySearchFunc(cs, ver, func(c commit, v int64) int { return int(c.ver - v) })
	if !ok {
		return commit{}, false
	}
	return cs[i], true
}

// excess is how much of a read's staleness s the downtime within its window does not
// account for: the read is wrong when it is over margin.
func excess(s time.Duration, start time.Time, down *downtime) time.Duration {
	return s - down.overlap(start.Add(-s), start)
}

// member judges one row a lookup returned: a version that was committed, that holds
// the values looked up (hold), and is not staler than the margin beyond the downtime.
// Empty when fine. h.commits must be sorted.
func (h *history) member(l lookupRead, f found, down *downtime, hold func(commit) bool, what string) string {
	r := row{keyedTable, f.id}
	c, ok := h.version(r, f.ver)
	if !ok {
		return fmt.Sprintf("row %d at version %d, which was never committed", f.id, f.ver)
	}
	if !hold(c) {
		return fmt.Sprintf("row %d at version %d, whose %s", f.id, f.ver, what)
	}
	s := h.staleness(read{row: r, ver: f.ver, start: l.start})
	if e := excess(s, l.start, down); e > margin {
		return fmt.Sprintf("row %d at version %d, %v stale, %v beyond the downtime in that window (margin %v)", f.id, f.ver, s, e, margin)
	}
	return ""
}

// lookupViolation explains what is wrong with a lookup read, or returns "". A lookup
// by code must return one row holding the code (swaps keep every code held, so "no
// row" is wrong), at an allowed version. A list by group returns rows in id order,
// each holding the group at an allowed version, and misses no row that has been in
// the group since before the read's start by more than the margin beyond the downtime
// in between, and still was when the read returned. h.commits must be sorted.
func (h *history) lookupViolation(l lookupRead, down *downtime) string {
	if l.byCode {
		switch len(l.rows) {
		case 0:
			return "no row, but some row holds every code at all times"
		case 1:
			return h.member(l, l.rows[0], down, func(c commit) bool { return c.code == l.code }, fmt.Sprintf("code is not %s", l.code))
		}
		return fmt.Sprintf("%d rows", len(l.rows))
	}
	in := make(map[int64]bool, len(l.rows))
	for i, f := range l.rows {
		if i > 0 && f.id <= l.rows[i-1].id {
			return fmt.Sprintf("rows out of id order: %v", l.rows)
		}
		in[f.id] = true
		if why := h.member(l, f, down, func(c commit) bool { return c.grp == l.grp }, fmt.Sprintf("group is not %d", l.grp)); why != "" {
			return why
		}
	}
	for id := int64(1); id <= nKeyed; id++ {
		if in[id] {
			continue
		}
		since, ok := memberSince(h.commits[row{keyedTable, id}], l.grp, l.end)
		if !ok || !since.Before(l.start) {
			continue
		}
		if e := excess(l.start.Sub(since), l.start, down); e > margin {
			return fmt.Sprintf("no row %d, which was in the group from %s (at the latest) until after the read, %v beyond the downtime (margin %v)",
				id, since.Format("15:04:05.000000"), e, margin)
		}
	}
	return ""
}

// memberSince returns since when (at the latest) the row whose commits are cs, in
// version order, has been in group g without a break until end, if it was: its
// versions that may have committed before end (begun before it) end in a run of
// versions in g, and since is when the first of them had committed.
func memberSince(cs []commit, g int64, end time.Time) (time.Time, bool) {
	k := -1
	for i, c := range cs {
		if c.begin.Before(end) {
			k = i
		}
	}
	if k < 0 || cs[k].grp != g {
		return time.Time{}, false
	}
	for k > 0 && cs[k-1].grp == g {
		k--
	}
	return cs[k].at, true
}

// keyedWriter writes keyed items by raw SQL, as another service would: the one writer
// of the table. Every transaction locks the rows it writes and reads their versions
// first, so a version whose commit result was lost (Postgres killed) is recorded when
// the row is next written, or at quiescence (recover): the history holds every
// version by the end, and a read of any version can be judged.
type keyedWriter struct {
	db    *gorm.DB
	h     *history
	known map[int64]KeyedItem // the last version of each row recorded
	// lost holds, for a row with a write whose result is unknown, when the first such
	// write began: the version it may have committed lies after.
	lost                 map[int64]time.Time
	swaps, moves, writes int64
}

func newKeyedWriter(db *gorm.DB, h *history) *keyedWriter {
	w := &keyedWriter{db: db, h: h, known: map[int64]KeyedItem{}, lost: map[int64]time.Time{}}
	for id := int64(1); id <= nKeyed; id++ {
		w.known[id] = KeyedItem{ID: id, Code: keyedCode(id), Grp: id % nGroups, Ver: 1}
	}
	return w
}

// step makes one write: a swap of two rows' codes, a move of a row to another group,
// or a value write.
func (w *keyedWriter) step(ctx context.Context) error {
	a := rand.Int64N(nKeyed) + 1
	b := (a+rand.Int64N(nKeyed-1))%nKeyed + 1 // another row
	ids := []int64{a}
	op := rand.IntN(5)
	if op < 2 {
		ids = append(ids, b)
	}
	begin := time.Now()
	var next []KeyedItem
	err := w.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var cur []KeyedItem
		if err := tx.Raw(`SELECT * FROM keyed_items WHERE id IN ? ORDER BY id FOR UPDATE`, ids).Scan(&cur).Error; err != nil {
			return err
		}
		if len(cur) != len(ids) {
			return fmt.Errorf("keyed items %v: %d rows in Postgres", ids, len(cur))
		}
		w.recover(cur)
		var err error
		switch {
		case op < 2:
			next, err = swap(tx, cur[0], cur[1])
		case op < 4:
			next, err = move(tx, cur[0])
		default:
			next, err = write(tx, cur[0])
		}
		return err
	})
	if err != nil {
		if pgUnavailable(err) {
			for _, id := range ids {
				if _, ok := w.lost[id]; !ok {
					w.lost[id] = begin
				}
			}
		}
		return err
	}
	at := time.Now()
	for _, n := range next {
		w.record(n, begin, at)
	}
	switch {
	case op < 2:
		w.swaps++
	case op < 4:
		w.moves++
	default:
		w.writes++
	}
	return nil
}

// swap exchanges two rows' codes in the caller's transaction, through a temporary
// code, since the index is unique.
func swap(tx *gorm.DB, x, y KeyedItem) ([]KeyedItem, error) {
	for _, s := range []struct {
		sql  string
		args []any
	}{
		{`UPDATE keyed_items SET code = ? WHERE id = ?`, []any{"swap", x.ID}},
		{`UPDATE keyed_items SET code = ?, ver = ver + 1 WHERE id = ?`, []any{x.Code, y.ID}},
		{`UPDATE keyed_items SET code = ?, ver = ver + 1 WHERE id = ?`, []any{y.Code, x.ID}},
	} {
		if err := tx.Exec(s.sql, s.args...).Error; err != nil {
			return nil, err
		}
	}
	x.Code, y.Code = y.Code, x.Code
	x.Ver++
	y.Ver++
	return []KeyedItem{x, y}, nil
}

// move puts the row in another group.
func move(tx *gorm.DB, x KeyedItem) ([]KeyedItem, error) {
	x.Grp = (x.Grp + 1 + rand.Int64N(nGroups-1)) % nGroups
	x.Ver++
	err := tx.Exec(`UPDATE keyed_items SET grp = ?, ver = ?, val = ? WHERE id = ?`, x.Grp, x.Ver, rand.Int64(), x.ID).Error
	return []KeyedItem{x}, err
}

// write changes the row's value only: its entries stay right.
func write(tx *gorm.DB, x KeyedItem) ([]KeyedItem, error) {
	x.Ver++
	err := tx.Exec(`UPDATE keyed_items SET ver = ?, val = ? WHERE id = ?`, x.Ver, rand.Int64(), x.ID).Error
	return []KeyedItem{x}, err
}

// recover records the versions of rows read under lock that the writer did not know
// of: a write whose result was lost had committed.
func (w *keyedWriter) recover(cur []KeyedItem) {
	for _, c := range cur {
		if c.Ver == w.known[c.ID].Ver {
			continue
		}
		begin, ok := w.lost[c.ID]
		if !ok {
			begin = time.Time{} // no lost write: cannot be, but judge leniently
		}
		w.record(c, begin, time.Now())
	}
}

func (w *keyedWriter) record(c KeyedItem, begin, at time.Time) {
	w.h.committedKeyed(c.ID, commit{ver: c.Ver, at: at, begin: begin, code: c.Code, grp: c.Grp})
	w.known[c.ID] = c
	delete(w.lost, c.ID)
}

// keyedCounts counts a cache process's reads of keyed items.
type keyedCounts struct{ byID, byCode, byGroup, members atomic.Int64 }

// report writes the counts as "n" lines.
func (n *keyedCounts) report(rep *report) {
	rep.line("n keyedreads %d", n.byID.Load())
	rep.line("n codereads %d", n.byCode.Load())
	rep.line("n groupreads %d", n.byGroup.Load())
	rep.line("n members %d", n.members.Load())
}

// readKeyed reads a keyed item by id, by code or by group and reports it: "r" as for
// other tables, "u code id ver start end" (id and ver 0 for no row), "g grp start end
// id ver ...". It counts the reads by kind.
func readKeyed(ctx context.Context, keyed *readthrough.Repository[KeyedItem], rep *report, n *keyedCounts) error {
	start := time.Now()
	switch rand.IntN(3) {
	case 0:
		id := rand.Int64N(nKeyed) + 1
		it, ok, err := keyed.Get(ctx, id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("Get keyed item %d: no row", id)
		}
		rep.line("r %s %d %d %d", keyedTable, id, it.Ver, start.UnixNano())
		n.byID.Add(1)
	case 1:
		code := keyedCode(rand.Int64N(nKeyed) + 1)
		it, ok, err := keyed.By("Code").Get(ctx, code)
		if err != nil {
			return err
		}
		if !ok {
			it = KeyedItem{} // reported as no row: the checker judges it
		}
		rep.line("u %s %d %d %d %d", code, it.ID, it.Ver, start.UnixNano(), time.Now().UnixNano())
		n.byCode.Add(1)
	default:
		g := rand.Int64N(nGroups)
		rows, err := keyed.ListBy("Grp").Get(ctx, g)
		if err != nil {
			return err
		}
		var b strings.Builder
		for _, it := range rows { // the checker judges their groups
			fmt.Fprintf(&b, " %d %d", it.ID, it.Ver)
		}
		rep.line("g %d %d %d%s", g, start.UnixNano(), time.Now().UnixNano(), b.String())
		n.byGroup.Add(1)
		n.members.Add(int64(len(rows)))
	}
	return nil
}

// parseLookup reads a "u" or "g" line's fields into a lookupRead.
func parseLookup(kind string, f []string, num func(int) int64) (lookupRead, error) {
	switch {
	case kind == "u" && len(f) == 5:
		l := lookupRead{byCode: true, code: f[0], start: time.Unix(0, num(3)), end: time.Unix(0, num(4))}
		if id := num(1); id != 0 {
			l.rows = []found{{id, num(2)}}
		}
		return l, nil
	case kind == "g" && len(f) >= 3 && len(f)%2 == 1:
		l := lookupRead{grp: num(0), start: time.Unix(0, num(1)), end: time.Unix(0, num(2))}
		for i := 3; i < len(f); i += 2 {
			l.rows = append(l.rows, found{num(i), num(i + 1)})
		}
		return l, nil
	}
	return lookupRead{}, errors.New("unreadable lookup line")
}
