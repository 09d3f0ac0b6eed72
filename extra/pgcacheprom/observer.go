package pgcacheprom

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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

	// models holds each model's histograms, looked up without locking or allocating
	// on the hit path; mu serializes adding a model (copy on write).
	models atomic.Pointer[map[string]*modelObservers]
	mu     sync.Mutex
}

type modelObservers struct {
	read [outcomes]prometheus.Observer // by readthrough.Outcome
	miss prometheus.Observer
}

// outcomes bounds the values of readthrough.Outcome a read reports.
const outcomes = int(readthrough.OutcomeError) + 1

// DefaultBuckets are the histograms' buckets when Options.Buckets is empty: 10µs to
// 1.5s.
var DefaultBuckets = prometheus.ExponentialBuckets(10e-6, 2.5, 14)

// NewObserver returns an Observer with opts' ConstLabels and Buckets.
func NewObserver(opts Options) *Observer {
	buckets := opts.Buckets
	if len(buckets) == 0 {
		buckets = DefaultBuckets
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
	o.models.Store(&map[string]*modelObservers{})
	return o
}

// observers returns model's histograms, made on first use.
func (o *Observer) observers(model string) *modelObservers {
	if m, ok := (*o.models.Load())[model]; ok {
		return m
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	old := *o.models.Load()
	if m, ok := old[model]; ok {
		return m
	}
	m := &modelObservers{miss: o.miss.WithLabelValues(model)}
	for i := 1; i < outcomes; i++ {
		m.read[i] = o.read.WithLabelValues(model, readthrough.Outcome(i).String())
	}
	models := maps.Clone(old)
	models[model] = m
	o.models.Store(&models)
	return m
}

// ObserveRead records d in the read histogram (readthrough.Observer).
func (o *Observer) ObserveRead(_ context.Context, model string, outcome readthrough.Outcome, d time.Duration) {
	if int(outcome) >= outcomes || outcome == 0 {
		return
	}
	o.observers(model).read[outcome].Observe(d.Seconds())
}

// StartOp times misses for the miss histogram (readthrough.Observer); other ops are
// not timed.
func (o *Observer) StartOp(ctx context.Context, op readthrough.Op, model string) (context.Context, func(readthrough.Outcome, error)) {
	if op != readthrough.OpMiss {
		return ctx, noEnd
	}
	h, start := o.observers(model).miss, time.Now()
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
