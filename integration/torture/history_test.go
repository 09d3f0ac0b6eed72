package torture

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// row names a row of one of the tortured tables.
type row struct {
	table string
	id    int64
}

// history records every committed (or acknowledged) version and every read, from every
// process. Versions of a row only grow.
type history struct {
	mu      sync.Mutex
	commits map[row][]commit
	reads   []read
	lookups []lookupRead // reads of keyed_items by code and by group
}

type commit struct {
	ver     int64
	at      time.Time // after the write returned
	deleted bool      // the version is a soft-deleted row (soft_items)
	// keyed_items only: the row's lookup columns at this version, and a time before
	// its transaction began, so the commit lies in [begin, at].
	code  string
	grp   int64
	begin time.Time
}

type read struct {
	row    row
	ver    int64     // 0 when absent
	start  time.Time // before the read began
	absent bool      // a read in the default scope found no row (soft_items)
}

func newHistory() *history { return &history{commits: map[row][]commit{}} }

func (h *history) committed(r row, ver int64, at time.Time) { h.committedState(r, ver, false, at) }

// committedState records a version that may be a soft delete: a soft delete is a
// version of its own (the writer bumps ver in the transaction that soft-deletes).
func (h *history) committedState(r row, ver int64, deleted bool, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.commits[r] = append(h.commits[r], commit{ver: ver, at: at, deleted: deleted})
}

func (h *history) read(r row, ver int64, start time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reads = append(h.reads, read{row: r, ver: ver, start: start})
}

// committedKeyed records a version of a keyed item with its lookup columns.
func (h *history) committedKeyed(id int64, c commit) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := row{keyedTable, id}
	h.commits[r] = append(h.commits[r], c)
}

// lookup records a read of keyed items by code or by group.
func (h *history) lookup(l lookupRead) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lookups = append(h.lookups, l)
}

// readAbsent records a read in the default scope that found no row.
func (h *history) readAbsent(r row, start time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reads = append(h.reads, read{row: r, start: start, absent: true})
}

// sort puts each row's commits in version order: processes report concurrently.
func (h *history) sort() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, cs := range h.commits {
		slices.SortFunc(cs, func(a, b commit) int { return int(a.ver - b.ver) })
	}
}

// staleness of a read: how long before the read began the first version newer than the
// one it returned had committed (0 when none had). Versions may have gaps: a write-back
// Save that failed may or may not have happened, so its version is never recorded.
//
// A read that found no row is as stale as the freshest soft-deleted version it may have
// seen: the least staleness over the row's deleted versions.
func (h *history) staleness(r read) time.Duration {
	cs := h.commits[r.row]
	if r.absent {
		best := time.Duration(-1)
		for _, c := range cs {
			if c.deleted {
				s := h.staleness(read{row: r.row, ver: c.ver, start: r.start})
				if best < 0 || s < best {
					best = s
				}
			}
		}
		return max(best, 0) // no deleted version: see wrongState
	}
	i, _ := slices.BinarySearchFunc(cs, r.ver+1, func(c commit, v int64) int { return int(c.ver - v) })
	if i >= len(cs) || !cs[i].at.Before(r.start) {
		return 0
	}
	return r.start.Sub(cs[i].at)
}

// wrongState explains a read that no version of the row can account for, however
// slow the cache: a row found in the default scope at a version that was a soft
// delete, or no row found although the row was never soft-deleted. Every version is
// recorded by the end (a version whose commit result was lost is recorded when the
// writer next locks the row, or at quiescence), so this is exact. Empty when fine.
func (h *history) wrongState(r read) string {
	cs := h.commits[r.row]
	if r.absent {
		if !slices.ContainsFunc(cs, func(c commit) bool { return c.deleted }) {
			return "no row, but the row was never soft-deleted"
		}
		return ""
	}
	i, found := slices.BinarySearchFunc(cs, r.ver, func(c commit, v int64) int { return int(c.ver - v) })
	if found && cs[i].deleted {
		return fmt.Sprintf("the row at version %d, which is soft-deleted, as present", r.ver)
	}
	return ""
}

// last returns the newest recorded version of the row.
func (h *history) last(r row) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	cs := h.commits[r]
	if len(cs) == 0 {
		return 0
	}
	return slices.MaxFunc(cs, func(a, b commit) int { return int(a.ver - b.ver) }).ver
}

// downtime records when a server the cache relies on (the worker, Redis) was away.
type downtime struct {
	mu    sync.Mutex
	spans [][2]time.Time
}

func (d *downtime) add(from, to time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.spans = append(d.spans, [2]time.Time{from, to})
}

// overlap returns how much of [from, to] the spans cover (they do not overlap: the
// chaos makes one fault at a time).
func (d *downtime) overlap(from, to time.Time) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	var sum time.Duration
	for _, s := range d.spans {
		lo, hi := s[0], s[1]
		if lo.Before(from) {
			lo = from
		}
		if hi.After(to) {
			hi = to
		}
		if hi.After(lo) {
			sum += hi.Sub(lo)
		}
	}
	return sum
}

// longest returns the longest span.
func (d *downtime) longest() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	var m time.Duration
	for _, s := range d.spans {
		m = max(m, s[1].Sub(s[0]))
	}
	return m
}
