package torture

import (
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
}

type commit struct {
	ver int64
	at  time.Time // after the write returned
}

type read struct {
	row   row
	ver   int64
	start time.Time // before the read began
}

func newHistory() *history { return &history{commits: map[row][]commit{}} }

func (h *history) committed(r row, ver int64, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.commits[r] = append(h.commits[r], commit{ver, at})
}

func (h *history) read(r row, ver int64, start time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reads = append(h.reads, read{r, ver, start})
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
func (h *history) staleness(r read) time.Duration {
	cs := h.commits[r.row]
	i, _ := slices.BinarySearchFunc(cs, r.ver+1, func(c commit, v int64) int { return int(c.ver - v) })
	if i >= len(cs) || !cs[i].at.Before(r.start) {
		return 0
	}
	return r.start.Sub(cs[i].at)
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
