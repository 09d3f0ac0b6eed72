package pgcacheprom

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgcache/pgcache/extra/internal/modelstats"
	"github.com/pgcache/pgcache/readthrough"
)

// Observer is a readthrough.Observer keeping the latency histograms
// pgcache_cache_read_duration_seconds{model,outcome} (each Get and GetMany) and
// pgcache_cache_miss_duration_seconds{model} (each miss, from the Redis read that
// missed to the row), and a prometheus.Collector of them. Make it with NewObserver,
// set it in readthrough.Options.Observer and register it. It is safe for concurrent
// use.
type Observer struct {
	read, miss *prometheus.HistogramVec
	models     *modelstats.PerModel[*modelObservers]
}

type modelObservers struct {
	read [outcomes]prometheus.Observer // by readthrough.Outcome
	miss prometheus.Observer
}

// outcomes bounds the values of readthrough.Outcome a read reports.
const outcomes = int(readthrough.OutcomeError) + 1

// NewObserver returns an Observer with opts' ConstLabels and Buckets.
func NewObserver(opts Options) *Observer {
	buckets := opts.Buckets
	if len(buckets) == 0 {
		buckets = modelstats.DefaultBuckets()
	}
	o := &Observer{
		read: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pgcache_cache_read_duration_seconds", ConstLabels: opts.ConstLabels, Buckets: buckets,
			Help: "Time a Get or GetMany took, by how it was answered (hit, negative_hit, near_hit, miss, error: Redis failed).",
		}, []string{"model", "outcome"}),
		miss: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pgcache_cache_miss_duration_seconds", ConstLabels: opts.ConstLabels, Buckets: buckets,
			Help: "Time a miss took from the Redis read that missed to the row: the wait for a fill, the database load and the store.",
		}, []string{"model"}),
	}
	o.models = modelstats.NewPerModel(func(model string) *modelObservers {
		m := &modelObservers{miss: o.miss.WithLabelValues(model)}
		for i := 1; i < outcomes; i++ {
			m.read[i] = o.read.WithLabelValues(model, readthrough.Outcome(i).String())
		}
		return m
	})
	return o
}

// ObserveRead records d in the read histogram (readthrough.Observer).
func (o *Observer) ObserveRead(_ context.Context, model string, outcome readthrough.Outcome, d time.Duration) {
	if int(outcome) >= outcomes || outcome == 0 {
		return
	}
	o.models.Get(model).read[outcome].Observe(d.Seconds())
}

// StartOp times misses for the miss histogram (readthrough.Observer); other ops are
// not timed.
func (o *Observer) StartOp(ctx context.Context, op readthrough.Op, model string) (context.Context, func(readthrough.Outcome, error)) {
	if op != readthrough.OpMiss {
		return ctx, noEnd
	}
	h, start := o.models.Get(model).miss, time.Now()
	return ctx, func(readthrough.Outcome, error) { h.Observe(time.Since(start).Seconds()) }
}

func noEnd(readthrough.Outcome, error) {}

// Describe sends the histograms' descriptions (prometheus.Collector).
func (o *Observer) Describe(ch chan<- *prometheus.Desc) {
	o.read.Describe(ch)
	o.miss.Describe(ch)
}

// Collect sends the histograms (prometheus.Collector).
func (o *Observer) Collect(ch chan<- prometheus.Metric) {
	o.read.Collect(ch)
	o.miss.Collect(ch)
}
