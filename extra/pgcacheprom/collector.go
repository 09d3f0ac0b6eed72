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

	"github.com/pgcache/pgcache/extra/internal/modelstats"
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
	for _, ctr := range modelstats.Counters() {
		c.counters = append(c.counters, counter{desc: desc(ctr.Name+"_total", ctr.Help, "model"), value: ctr.Value})
	}
	for _, ctr := range modelstats.LookupCounters() {
		d := desc("lookup_"+ctr.Name+"_total", ctr.Help, "model", "kind")
		for _, kind := range modelstats.Kinds() {
			c.counters = append(c.counters, counter{desc: d, kind: kind,
				value: func(s readthrough.Stats) uint64 { return ctr.ValueOf(s, kind) }})
		}
	}
	c.nearInval = desc("near_invalidations_total", "Keys Redis reported changed to this process's near cache.")
	c.nearFlushes = desc("near_flushes_total", "Times the near cache was emptied (tracking lost, or FLUSHDB).")
	c.pending = desc("writeback_pending", modelstats.WriteBackPendingHelp)
	c.scrapeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pgcache_cache_scrape_errors_total", ConstLabels: opts.ConstLabels,
		Help: "Scrapes that could not read the write-back journal's length from Redis (pgcache_cache_writeback_pending was left out).",
	})
	return c
}

// Describe sends the descriptions of the metrics Collect sends.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, ctr := range c.counters {
		if ctr.kind != modelstats.KindList { // the unique one sent it
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
