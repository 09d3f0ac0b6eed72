package torture

import (
	"strings"
	"testing"
	"time"
)

// TestLookupChecks is the control of the torture test's lookup checks: it feeds the
// checker right answers and deliberately wrong ones (a row that does not hold the
// code, "no row", a version staler than the margin, a member of another group, a
// missing member, rows out of order) and expects it to accept exactly the right ones.
// It needs no servers.
func TestLookupChecks(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	h := newHistory()
	for id := int64(1); id <= nKeyed; id++ {
		h.committedKeyed(id, commit{ver: 1, begin: t0, at: t0, code: keyedCode(id), grp: 0})
	}
	// At 10s rows 1 and 2 swap codes; row 3 moves to group 1 at 10s and back to group
	// 0 at 20s (that transaction began at 19.9s); row 4 moves to group 1 at 29s.
	h.committedKeyed(1, commit{ver: 2, begin: at(9.9), at: at(10), code: keyedCode(2), grp: 0})
	h.committedKeyed(2, commit{ver: 2, begin: at(9.9), at: at(10), code: keyedCode(1), grp: 0})
	h.committedKeyed(3, commit{ver: 2, begin: at(9.9), at: at(10), grp: 1, code: keyedCode(3)})
	h.committedKeyed(3, commit{ver: 3, begin: at(19.9), at: at(20), grp: 0, code: keyedCode(3)})
	h.committedKeyed(4, commit{ver: 2, begin: at(28.9), at: at(29), grp: 1, code: keyedCode(4)})
	h.sort()
	var down downtime
	down.add(at(40), at(50))

	code := func(c string, start float64, rows ...found) lookupRead {
		return lookupRead{byCode: true, code: c, start: at(start), end: at(start + 0.1), rows: rows}
	}
	group := func(g int64, start float64, ids ...int64) lookupRead {
		l := lookupRead{grp: g, start: at(start), end: at(start + 0.1)}
		for _, id := range ids {
			l.rows = append(l.rows, found{id, int64(len(h.commits[row{keyedTable, id}]))}) // the last version
		}
		return l
	}
	// Group 0 at 30s: every row but 4 (moved out at 29s), row 3 since 20s.
	var g0 []int64
	for id := int64(1); id <= nKeyed; id++ {
		if id != 4 {
			g0 = append(g0, id)
		}
	}
	without := func(ids []int64, drop int64) []int64 {
		var out []int64
		for _, id := range ids {
			if id != drop {
				out = append(out, id)
			}
		}
		return out
	}
	// Group 0 at 21s, without row 3 (back in it since 20s): rows 1 and 2 at version 2
	// (the swap), the others at 1 (row 4 moves out at 29s).
	var at21 []found
	for id := int64(1); id <= nKeyed; id++ {
		switch {
		case id == 1 || id == 2:
			at21 = append(at21, found{id, 2})
		case id != 3:
			at21 = append(at21, found{id, 1})
		}
	}
	for _, c := range []struct {
		name  string
		l     lookupRead
		wrong string // what the violation says; empty when the read is right
	}{
		{"the code's holder, current", code(keyedCode(1), 11, found{2, 2}), ""},
		{"the code's old holder, within the margin", code(keyedCode(1), 12, found{1, 1}), ""},
		{"the code's old holder, beyond the margin", code(keyedCode(1), 15, found{1, 1}), "stale"},
		{"the old holder, stale but for a downtime", code(keyedCode(5), 55, found{5, 1}), ""},
		{"a row that does not hold the code", code(keyedCode(1), 11, found{1, 2}), "code is not k01"},
		{"no row", code(keyedCode(1), 11), "no row"},
		{"a version never committed", code(keyedCode(1), 11, found{2, 7}), "never committed"},
		{"group 0, complete", group(0, 30, g0...), ""},
		{"group 0 without a row that joined within the margin", lookupRead{grp: 0, start: at(21), end: at(21.1), rows: at21}, ""},
		{"group 0 without a row that was always there", group(0, 30, without(g0, 7)...), "no row 7"},
		{"group 0 without a row that rejoined long ago", group(0, 30, without(g0, 3)...), "no row 3"},
		{"group 1 without a row that left while it read", lookupRead{grp: 1, start: at(19.5), end: at(19.95)}, ""},
		{"group 1 without a row that left after it read", lookupRead{grp: 1, start: at(19.5), end: at(19.8)}, "no row 3"},
		{"group 1 with a row of group 0", group(1, 30, 4, 5), "group is not 1"},
		{"rows out of order", group(0, 30, 2, 1), "out of id order"},
	} {
		got := h.lookupViolation(c.l, &down)
		if (got == "") != (c.wrong == "") || !strings.Contains(got, c.wrong) {
			t.Errorf("%s: the checker says %q, want %q", c.name, got, c.wrong)
		}
	}
}
