// Package pgcacheprom exports the metrics of a readthrough.Cache to Prometheus: a
// Collector of its per-model counters, read from Cache.ModelStats when scraped, and
// an Observer of read and miss latencies, set in readthrough.Options.Observer.
//
//	obs := pgcacheprom.NewObserver(pgcacheprom.Options{})
//	cache, err := readthrough.New(db, rdb, readthrough.Options{Observer: obs})
//	// ... register models ...
//	reg.MustRegister(pgcacheprom.NewCollector(cache, pgcacheprom.Options{}), obs)
//
// Either works alone: the Collector costs nothing between scrapes, and without the
// Observer a hit costs what it did. The package lives in module
// github.com/pgcache/pgcache/extra, so that the library does not depend on the
// Prometheus client. The metrics are listed in the README ("Metrics and traces").
package pgcacheprom

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgcache/pgcache/readthrough"
)

// Options configure a Collector and an Observer. The zero value is ready to use.
type Options struct {
	// ConstLabels are added to every metric, to tell apart several caches registered
	// with one registry (for example {"cache": "accounts"}). Default none.
	ConstLabels prometheus.Labels
	// WriteBackTimeout bounds the Redis call (XLEN) that pgcache_cache_writeback_pending
	// makes at each scrape, when the cache has write-back models. Default 1s. When it
	// fails the scrape leaves that metric out and counts
	// pgcache_cache_scrape_errors_total.
	WriteBackTimeout time.Duration
	// Buckets are the upper bounds, in seconds, of the Observer's histograms. Default
	// 14 buckets from 10µs (a near-cache hit) to 1.5s, each 2.5 times the last.
	Buckets []float64
}

// Collector is a prometheus.Collector of a readthrough.Cache's counters, labelled by
// model: each scrape reads Cache.ModelStats, so the counters are the cache's own and
// nothing is counted twice. Make it with NewCollector; it is safe for concurrent
// use.
type Collector struct {
	cache        *readthrough.Cache
	timeout      time.Duration
	counters     []counter
	nearInval    *prometheus.Desc
	nearFlushes  *prometheus.Desc
	pending      *prometheus.Desc
	scrapeErrors prometheus.Counter
}

// counter is one per-model counter and the Stats field it exports; kind is the
// lookup kind label of the lookup counters, "" for the others.
type counter struct {
	desc  *prometheus.Desc
	kind  string
	value func(readthrough.Stats) uint64
}

// NewCollector returns a Collector of cache's counters. Register it with a
// prometheus.Registerer; registering two for one cache on one registry fails, as their
// metrics would collide (give them ConstLabels to tell them apart).
func NewCollector(cache *readthrough.Cache, opts Options) *Collector {
	if opts.WriteBackTimeout <= 0 {
		opts.WriteBackTimeout = time.Second
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("pgcache_cache_"+name, help, labels, opts.ConstLabels)
	}
	c := &Collector{cache: cache, timeout: opts.WriteBackTimeout}
	add := func(name, help string, value func(readthrough.Stats) uint64) {
		c.counters = append(c.counters, counter{desc: desc(name, help, "model"), value: value})
	}
	add("hits_total", "Reads answered from Redis with a row.", func(s readthrough.Stats) uint64 { return s.Hits })
	add("negative_hits_total", `Reads answered from Redis with "no such row" (soft-deleted rows in the default scope included).`,
		func(s readthrough.Stats) uint64 { return s.NegativeHits })
	add("misses_total", "Reads that found nothing usable in Redis.", func(s readthrough.Stats) uint64 { return s.Misses })
	add("loads_total", "Database queries made by misses and by reads that bypass the cache.", func(s readthrough.Stats) uint64 { return s.Loads })
	add("fills_total", "Entries stored after a load.", func(s readthrough.Stats) uint64 { return s.Fills })
	add("fills_refused_total", "Fills refused because the row was invalidated during the load.",
		func(s readthrough.Stats) uint64 { return s.FillsRefused })
	add("stampede_waits_total", "Reads that waited for another reader's fill of the same row.",
		func(s readthrough.Stats) uint64 { return s.StampedeWaits })
	add("decode_errors_total", "Cached entries that could not be decoded (deleted, read as misses).",
		func(s readthrough.Stats) uint64 { return s.DecodeErrors })
	add("uncacheable_total", "Rows loaded that the cache cannot hold exactly (returned, not cached).",
		func(s readthrough.Stats) uint64 { return s.Uncacheable })
	add("redis_errors_total", "Redis failures: reads that went to Postgres instead, committed writes whose entry was left to the invalidator, failed write-back writes.",
		func(s readthrough.Stats) uint64 { return s.Errors })
	add("invalidations_total", "Rows invalidated through the repository (Invalidate, or after a write).",
		func(s readthrough.Stats) uint64 { return s.Invalidations })
	add("writes_total", "Writes through the repository that committed (write-back: that Redis acknowledged).",
		func(s readthrough.Stats) uint64 { return s.Writes })
	add("near_hits_total", "Reads answered by the near cache, in process.", func(s readthrough.Stats) uint64 { return s.NearHits })
	add("near_misses_total", "Reads of a near-cached model that went on to Redis.", func(s readthrough.Stats) uint64 { return s.NearMisses })
	add("near_evictions_total", "Near-cache entries evicted by the model's bound.", func(s readthrough.Stats) uint64 { return s.NearEvictions })
	lookup := func(name, help string, value func(readthrough.LookupStats) uint64) {
		d := desc(name, help, "model", "kind")
		c.counters = append(c.counters,
			counter{desc: d, kind: "unique", value: func(s readthrough.Stats) uint64 { return value(s.Unique) }},
			counter{desc: d, kind: "list", value: func(s readthrough.Stats) uint64 { return value(s.List) }})
	}
	lookup("lookup_hits_total", "Lookups (kind unique: By; list: ListBy) whose entry was cached.",
		func(s readthrough.LookupStats) uint64 { return s.Hits })
	lookup("lookup_misses_total", "Lookups that found no entry.", func(s readthrough.LookupStats) uint64 { return s.Misses })
	lookup("lookup_stale_total", "Lookup entries found stale by the check on read, deleted and filled again.",
		func(s readthrough.LookupStats) uint64 { return s.Stale })
	lookup("lookup_over_cap_total", "Lists longer than ListCap, read from Postgres and not cached.",
		func(s readthrough.LookupStats) uint64 { return s.OverCap })
	c.nearInval = desc("near_invalidations_total", "Keys Redis reported changed to this process's near cache.")
	c.nearFlushes = desc("near_flushes_total", "Times the near cache was emptied (tracking lost, or FLUSHDB).")
	c.pending = desc("writeback_pending",
		"Entries in the write-back journal the cache's write-back models write to (shared by them): writes not yet applied to Postgres, and applied ones behind an unacknowledged one. Present only when the cache has write-back models.")
	c.scrapeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pgcache_cache_scrape_errors_total", ConstLabels: opts.ConstLabels,
		Help: "Scrapes that could not read the write-back journal's length from Redis (pgcache_cache_writeback_pending was left out).",
	})
	return c
}

// Describe sends the descriptions of the metrics Collect sends.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, ctr := range c.counters {
		if ctr.kind != "list" { // the unique one sent it
			ch <- ctr.desc
		}
	}
	ch <- c.nearInval
	ch <- c.nearFlushes
	ch <- c.pending
	c.scrapeErrors.Describe(ch)
}

// Collect sends the cache's counters, read now, and the write-back journal's length,
// read from Redis within WriteBackTimeout.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for model, s := range c.cache.ModelStats() {
		for _, ctr := range c.counters {
			labels := []string{model}
			if ctr.kind != "" {
				labels = append(labels, ctr.kind)
			}
			ch <- prometheus.MustNewConstMetric(ctr.desc, prometheus.CounterValue, float64(ctr.value(s)), labels...)
		}
	}
	all := c.cache.Stats()
	ch <- prometheus.MustNewConstMetric(c.nearInval, prometheus.CounterValue, float64(all.NearInvalidations))
	ch <- prometheus.MustNewConstMetric(c.nearFlushes, prometheus.CounterValue, float64(all.NearFlushes))
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	switch n, ok, err := c.cache.WriteBackBacklog(ctx); {
	case err != nil:
		c.scrapeErrors.Inc()
	case ok:
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(n))
	}
	c.scrapeErrors.Collect(ch)
}
