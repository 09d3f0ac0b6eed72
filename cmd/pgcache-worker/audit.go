package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for the auditor
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/audit"
)

// auditConfig is the coherence auditor's part of the configuration.
type auditConfig struct {
	rateStr, recheckStr string
	rate                float64       // samples per second; 0 is off
	recheck             time.Duration // see audit.Options.Recheck
}

func auditFlags(c *auditConfig, str stringFlag) {
	str(&c.rateStr, "audit-rate", "PGCACHE_AUDIT_RATE", "0",
		"coherence auditor: cached entries compared with Postgres per second (0: off); see pgcache_audit_* metrics")
	str(&c.recheckStr, "audit-recheck", "PGCACHE_AUDIT_RECHECK", "5s",
		"coherence auditor: how long after a mismatch the entry and the row are read again; only a mismatch still there, with the same bytes cached, is counted (keep it above the invalidation lag)")
}

func (c *auditConfig) parse() error {
	var err error
	if c.rate, err = strconv.ParseFloat(c.rateStr, 64); err != nil || c.rate < 0 {
		return fmt.Errorf("-audit-rate %q: want samples per second, such as 10, or 0 for off", c.rateStr)
	}
	if c.recheck, err = time.ParseDuration(c.recheckStr); err != nil || c.recheck <= 0 {
		return fmt.Errorf("-audit-recheck %q: want a positive duration such as 5s", c.recheckStr)
	}
	return nil
}

// newAuditor returns the auditor -audit-rate asks for (nil when off) and what closes
// its database.
func newAuditor(cfg config, rdb redis.UniversalClient, log *slog.Logger) (*audit.Auditor, func(), error) {
	if cfg.audit.rate == 0 {
		return nil, func() {}, nil
	}
	db, err := sql.Open("pgx", cfg.postgres)
	if err != nil {
		return nil, nil, fmt.Errorf("-postgres: %w", err)
	}
	db.SetMaxOpenConns(2)
	a, err := audit.New(rdb, db, audit.Options{Prefix: cfg.prefix, Rate: cfg.audit.rate, Recheck: cfg.audit.recheck, Logger: log})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return a, func() { db.Close() }, nil
}

// auditRun returns the auditor's Run, or nil without an auditor.
func auditRun(a *audit.Auditor) func(context.Context) error {
	if a == nil {
		return nil
	}
	return a.Run
}

// auditCollector exports the auditor's counters; nil without an auditor.
func auditCollector(a *audit.Auditor) prometheus.Collector {
	if a == nil {
		return nil
	}
	return &auditMetrics{a: a,
		checked:      prometheus.NewDesc("pgcache_audit_checked_total", "Cached entries the coherence auditor compared with Postgres.", nil, nil),
		rechecks:     prometheus.NewDesc("pgcache_audit_rechecks_total", "Mismatches read again after -audit-recheck (most are invalidation lag).", nil, nil),
		skipped:      prometheus.NewDesc("pgcache_audit_skipped_total", "Samples not compared: no entry, a pending write-back write, no shape announced yet, a lookup entry.", nil, nil),
		errors:       prometheus.NewDesc("pgcache_audit_errors_total", "Failed reads of Redis or Postgres by the auditor.", nil, nil),
		inconsistent: prometheus.NewDesc("pgcache_audit_inconsistent_total", "Confirmed inconsistencies: entries that still differed from Postgres, with the same bytes, after -audit-recheck.", []string{"table"}, nil),
	}
}

type auditMetrics struct {
	a                                                *audit.Auditor
	checked, rechecks, skipped, errors, inconsistent *prometheus.Desc
}

func (m *auditMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.checked, m.rechecks, m.skipped, m.errors, m.inconsistent} {
		ch <- d
	}
}

func (m *auditMetrics) Collect(ch chan<- prometheus.Metric) {
	s := m.a.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(m.checked, s.Checked)
	counter(m.rechecks, s.Rechecks)
	counter(m.skipped, s.Skipped)
	counter(m.errors, s.Errors)
	for table, n := range s.Inconsistent {
		counter(m.inconsistent, n, table)
	}
}
