package main

import (
	"context"
	"log/slog"
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
type slotCollector struct {
	url, slot string
	log       *slog.Logger

	mu   sync.Mutex // one read at a time; guards conn
	conn *pgx.Conn
	warn rate.Sometimes

	up, exists, streamed, retained, lag, safe, status *prometheus.Desc
}

func newSlotCollector(url, slot string, log *slog.Logger) *slotCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("pgcache_slot_"+name, help, labels, nil)
	}
	return &slotCollector{url: url, slot: slot, log: log, warn: rate.Sometimes{Interval: time.Minute},
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
	for _, d := range []*prometheus.Desc{c.up, c.exists, c.streamed, c.retained, c.lag, c.safe, c.status} {
		ch <- d
	}
}

func (c *slotCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	h, err := c.read()
	if err != nil {
		c.warn.Do(func() {
			c.log.Warn("cannot read the replication slot's health", slog.String("slot", c.slot), slog.Any("error", err))
		})
		gauge(c.up, 0)
		return
	}
	gauge(c.up, 1)
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

// read reads the slot's health, connecting first if needed; a failed read drops the
// connection, so the next scrape connects again.
func (c *slotCollector) read() (cdc.SlotHealth, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if c.conn == nil {
		conn, err := pgx.Connect(ctx, c.url)
		if err != nil {
			return cdc.SlotHealth{}, err
		}
		c.conn = conn
	}
	h, err := cdc.ReadSlot(ctx, c.conn, c.slot)
	if err != nil {
		_ = c.conn.Close(context.Background())
		c.conn = nil
	}
	return h, err
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
