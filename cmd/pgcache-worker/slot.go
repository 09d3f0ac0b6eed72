package main

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/pgcache/pgcache/cdc"
)

// slotCollector exports the replication slot's health as Postgres reports it, read at
// each scrape on a connection of its own. Every replica of the worker exports it, the
// standbys too, so that an alert fires when the slot retains WAL and nobody streams
// it, even while the active worker is gone.
//
// It also exports, as pgcache_table_unpublished, the tables of the prefix's registry
// (those applications cache) that no publication publishes: no worker invalidates
// them, so rows changed by anyone but the library stay stale until they expire. Often
// a worker whose search_path resolved an unqualified -tables entry to another schema's
// table of that name. A worker cannot refuse to start for it (another worker may be
// meant to stream that table), so it says so: at start in its log, and in the metric.
type slotCollector struct {
	url, slot string
	log       *slog.Logger
	// registry reads the tables applications cache (store.Versions).
	registry func(context.Context) (map[string][]string, error)

	mu   sync.Mutex // one read at a time; guards conn
	conn *pgx.Conn
	warn rate.Sometimes

	up, exists, streamed, retained, lag, safe, status, unpublished *prometheus.Desc
}

func newSlotCollector(url, slot string, registry func(context.Context) (map[string][]string, error), log *slog.Logger) *slotCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("pgcache_slot_"+name, help, labels, nil)
	}
	return &slotCollector{url: url, slot: slot, registry: registry, log: log, warn: rate.Sometimes{Interval: time.Minute},
		unpublished: prometheus.NewDesc("pgcache_table_unpublished",
			"1 for each table applications cache (the prefix's registry) that no publication publishes: no worker invalidates it.", []string{"table"}, nil),
		up:       d("up", "1 when the slot's health could be read from Postgres."),
		exists:   d("exists", "1 when the replication slot exists."),
		streamed: d("streamed", "1 while some process streams the slot (this worker or another)."),
		retained: d("retained_wal_bytes", "WAL the slot keeps on the server's disk (current position minus restart_lsn)."),
		lag:      d("confirmed_lag_bytes", "Current WAL position minus the slot's confirmed position."),
		safe:     d("safe_wal_size_bytes", "WAL that can still be written before the slot is lost; -1 when unlimited."),
		status:   d("wal_status", "1 for the slot's wal_status (reserved, extended, unreserved, lost).", "status"),
	}
}

func (c *slotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.exists, c.streamed, c.retained, c.lag, c.safe, c.status, c.unpublished} {
		ch <- d
	}
}

func (c *slotCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	h, unpublished, err, pubErr := c.read()
	if pubErr != nil && err == nil {
		c.warn.Do(func() {
			c.log.Warn("cannot read which cached tables are published", slog.Any("error", pubErr))
		})
	}
	if err != nil {
		c.warn.Do(func() {
			c.log.Warn("cannot read the replication slot's health", slog.String("slot", c.slot), slog.Any("error", err))
		})
		gauge(c.up, 0)
		return
	}
	gauge(c.up, 1)
	for _, t := range unpublished {
		gauge(c.unpublished, 1, t)
	}
	gauge(c.exists, b2f(h.Exists))
	if !h.Exists {
		return
	}
	gauge(c.streamed, b2f(h.Active))
	gauge(c.retained, float64(h.RetainedBytes))
	gauge(c.lag, float64(h.ConfirmedLagBytes))
	gauge(c.safe, float64(h.SafeWALSizeBytes))
	if h.WALStatus != "" {
		gauge(c.status, 1, h.WALStatus)
	}
}

// read reads the slot's health and the registry's unpublished tables, connecting
// first if needed; a failed read drops the connection, so the next scrape connects
// again. pubErr is the error of the second read alone: the slot's health is good
// without it.
func (c *slotCollector) read() (h cdc.SlotHealth, unpublished []string, err, pubErr error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if c.conn == nil {
		conn, err := pgx.Connect(ctx, c.url)
		if err != nil {
			return cdc.SlotHealth{}, nil, err, err
		}
		c.conn = conn
	}
	if h, err = cdc.ReadSlot(ctx, c.conn, c.slot); err != nil {
		pubErr = err
	} else {
		unpublished, pubErr = c.unpublishedTables(ctx)
	}
	if err != nil || (pubErr != nil && c.conn.IsClosed()) {
		_ = c.conn.Close(context.Background())
		c.conn = nil
	}
	return h, unpublished, err, pubErr
}

// unpublishedTables returns the registry's tables that Postgres has and no
// publication publishes, sorted. Called with c.mu held.
func (c *slotCollector) unpublishedTables(ctx context.Context) ([]string, error) {
	versions, err := c.registry(ctx)
	if err != nil {
		return nil, err
	}
	var unpublished []string
	for _, table := range slices.Sorted(maps.Keys(versions)) {
		pubs, ok, err := cdc.Publications(ctx, c.conn, table)
		if err != nil {
			return nil, err
		}
		if ok && len(pubs) == 0 {
			unpublished = append(unpublished, table)
		}
	}
	return unpublished, nil
}

// warnUnpublished logs, once, the tables applications cache that no publication
// publishes, as soon as ready (the worker streams: its own publication exists) or
// not at all if ctx ends first; the worker runs it at start.
func (c *slotCollector) warnUnpublished(ctx context.Context, ready func() bool) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !ready() {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
	_, unpublished, _, err := c.read()
	if err == nil && len(unpublished) > 0 {
		c.log.Warn("applications cache tables that no publication publishes: no worker invalidates them, so rows other writers change stay stale until they expire; give a worker -tables with these names, schema-qualified (pgcache-worker status lists them)",
			slog.Any("tables", unpublished))
	}
	return nil
}

// close closes the collector's connection.
func (c *slotCollector) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		_ = c.conn.Close(context.Background())
		c.conn = nil
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
