// Package pgcacheotel instruments a readthrough.Cache with OpenTelemetry: an Observer,
// set in readthrough.Options.Observer, that records read and miss latencies through
// the OTel metric API and spans for misses, fills and writes through the trace API;
// and RegisterCache, which reports the cache's per-model counters as observable
// counters, read from Cache.ModelStats at each collection.
//
//	obs, err := pgcacheotel.NewObserver(pgcacheotel.Options{}) // the otel globals
//	cache, err := readthrough.New(db, rdb, readthrough.Options{Observer: obs})
//	// ... register models ...
//	reg, err := obs.RegisterCache(cache)
//	defer reg.Unregister()
//
// Spans are named pgcache.miss, pgcache.fill and pgcache.write and carry the
// attributes pgcache.model, pgcache.op (miss, fill, create, save, delete) and
// pgcache.outcome; a failed op records its error and sets the span's status. A fill
// is a child of the miss it serves, and the database queries a miss or a write makes
// are children of its span when GORM is instrumented (the span is in their context).
// Hits make no span. The instruments are named like the Prometheus metrics of package
// pgcacheprom with dots (pgcache.cache.hits, pgcache.cache.read.duration in seconds),
// so that an OTel Prometheus exporter gives the same names. The package lives in
// module github.com/pgcache/pgcache/extra, so that the library does not depend on
// OpenTelemetry.
package pgcacheotel

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgcache/pgcache/readthrough"
)

// ScopeName is the instrumentation scope of the meter and the tracer.
const ScopeName = "github.com/pgcache/pgcache/extra/pgcacheotel"

// Attribute keys on spans and measurements.
const (
	AttrModel   = attribute.Key("pgcache.model")   // the model's Go type name
	AttrOp      = attribute.Key("pgcache.op")      // miss, fill, create, save, delete (spans)
	AttrOutcome = attribute.Key("pgcache.outcome") // readthrough.Outcome's String
	AttrKind    = attribute.Key("pgcache.lookup.kind")
)

// Options configure an Observer. The zero value uses the otel globals.
type Options struct {
	// MeterProvider makes the meter. Default otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// TracerProvider makes the tracer. Default otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// Buckets are the explicit bucket boundaries, in seconds, of the latency
	// histograms. Default 14 from 10µs to 1.5s, each 2.5 times the last.
	Buckets []float64
}

// Observer is a readthrough.Observer recording OTel metrics and spans. Make it with
// NewObserver. It is safe for concurrent use.
type Observer struct {
	meter      metric.Meter
	tracer     trace.Tracer
	read, miss metric.Float64Histogram

	// attrs holds each model's attribute sets, looked up without locking on the hit
	// path; mu serializes adding a model (copy on write).
	attrs atomic.Pointer[map[string]*modelAttrs]
	mu    sync.Mutex
}

type modelAttrs struct {
	model attribute.KeyValue
	read  [outcomes]metric.MeasurementOption // by readthrough.Outcome
	miss  metric.MeasurementOption
}

const outcomes = int(readthrough.OutcomeOK) + 1

// NewObserver returns an Observer; the error is the meter's, making an instrument.
func NewObserver(opts Options) (*Observer, error) {
	if opts.MeterProvider == nil {
		opts.MeterProvider = otel.GetMeterProvider()
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = otel.GetTracerProvider()
	}
	if len(opts.Buckets) == 0 {
		opts.Buckets = make([]float64, 14)
		for i, b := 0, 10e-6; i < len(opts.Buckets); i, b = i+1, b*2.5 {
			opts.Buckets[i] = b
		}
	}
	o := &Observer{
		meter:  opts.MeterProvider.Meter(ScopeName),
		tracer: opts.TracerProvider.Tracer(ScopeName),
	}
	var err error
	o.read, err = o.meter.Float64Histogram("pgcache.cache.read.duration", metric.WithUnit("s"),
		metric.WithDescription("Time a Get or GetMany took, by how it was answered (pgcache.outcome: hit, negative_hit, near_hit, miss, error)."),
		metric.WithExplicitBucketBoundaries(opts.Buckets...))
	if err != nil {
		return nil, fmt.Errorf("pgcacheotel: read histogram: %w", err)
	}
	o.miss, err = o.meter.Float64Histogram("pgcache.cache.miss.duration", metric.WithUnit("s"),
		metric.WithDescription("Time a miss took from the Redis read that missed to the row."),
		metric.WithExplicitBucketBoundaries(opts.Buckets...))
	if err != nil {
		return nil, fmt.Errorf("pgcacheotel: miss histogram: %w", err)
	}
	o.attrs.Store(&map[string]*modelAttrs{})
	return o, nil
}

// attrsOf returns model's attribute sets, made on first use.
func (o *Observer) attrsOf(model string) *modelAttrs {
	if a, ok := (*o.attrs.Load())[model]; ok {
		return a
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	old := *o.attrs.Load()
	if a, ok := old[model]; ok {
		return a
	}
	a := &modelAttrs{model: AttrModel.String(model), miss: metric.WithAttributeSet(attribute.NewSet(AttrModel.String(model)))}
	for i := 1; i < outcomes; i++ {
		a.read[i] = metric.WithAttributeSet(attribute.NewSet(AttrModel.String(model), AttrOutcome.String(readthrough.Outcome(i).String())))
	}
	attrs := maps.Clone(old)
	attrs[model] = a
	o.attrs.Store(&attrs)
	return a
}

// ObserveRead records d in pgcache.cache.read.duration (readthrough.Observer).
func (o *Observer) ObserveRead(ctx context.Context, model string, outcome readthrough.Outcome, d time.Duration) {
	if int(outcome) >= outcomes || outcome == 0 {
		return
	}
	o.read.Record(ctx, d.Seconds(), o.attrsOf(model).read[outcome])
}

// StartOp starts the op's span, and for a miss times it for pgcache.cache.miss.duration
// (readthrough.Observer).
func (o *Observer) StartOp(ctx context.Context, op readthrough.Op, model string) (context.Context, func(readthrough.Outcome, error)) {
	a := o.attrsOf(model)
	name := "pgcache." + op.String()
	if op.Write() {
		name = "pgcache.write"
	}
	start := time.Now()
	ctx, span := o.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal), trace.WithTimestamp(start),
		trace.WithAttributes(a.model, AttrOp.String(op.String())))
	return ctx, func(outcome readthrough.Outcome, err error) {
		if op == readthrough.OpMiss {
			o.miss.Record(ctx, time.Since(start).Seconds(), a.miss)
		}
		span.SetAttributes(AttrOutcome.String(outcome.String()))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// RegisterCache reports cache's per-model counters through the meter as observable
// counters (pgcache.cache.hits, .negative_hits, .misses, .loads, .fills,
// .fills_refused, .stampede_waits, .decode_errors, .uncacheable, .redis_errors,
// .invalidations, .writes, .near_hits, .near_misses, .near_evictions, each with
// pgcache.model; .lookup.hits, .lookup.misses, .lookup.stale, .lookup.over_cap with
// pgcache.lookup.kind too), read from Cache.ModelStats at each collection, and
// pgcache.cache.writeback.pending, the write-back journal's length (an observable
// gauge, present when the cache has write-back models; read within timeout, default
// 1s when 0). Unregister the registration to stop.
func (o *Observer) RegisterCache(cache *readthrough.Cache, timeout time.Duration) (metric.Registration, error) {
	if timeout <= 0 {
		timeout = time.Second
	}
	type counter struct {
		inst  metric.Int64ObservableCounter
		kind  string
		value func(readthrough.Stats) uint64
	}
	var (
		counters []counter
		insts    []metric.Observable
		errs     error
	)
	add := func(name, desc string, value func(readthrough.Stats) uint64) {
		c, err := o.meter.Int64ObservableCounter("pgcache.cache."+name, metric.WithDescription(desc))
		if err != nil && errs == nil {
			errs = fmt.Errorf("pgcacheotel: counter %s: %w", name, err)
		}
		counters = append(counters, counter{inst: c, value: value})
		insts = append(insts, c)
	}
	add("hits", "Reads answered from Redis with a row.", func(s readthrough.Stats) uint64 { return s.Hits })
	add("negative_hits", `Reads answered from Redis with "no such row".`, func(s readthrough.Stats) uint64 { return s.NegativeHits })
	add("misses", "Reads that found nothing usable in Redis.", func(s readthrough.Stats) uint64 { return s.Misses })
	add("loads", "Database queries made by misses and by reads that bypass the cache.", func(s readthrough.Stats) uint64 { return s.Loads })
	add("fills", "Entries stored after a load.", func(s readthrough.Stats) uint64 { return s.Fills })
	add("fills_refused", "Fills refused because the row was invalidated during the load.", func(s readthrough.Stats) uint64 { return s.FillsRefused })
	add("stampede_waits", "Reads that waited for another reader's fill.", func(s readthrough.Stats) uint64 { return s.StampedeWaits })
	add("decode_errors", "Cached entries that could not be decoded.", func(s readthrough.Stats) uint64 { return s.DecodeErrors })
	add("uncacheable", "Rows loaded that the cache cannot hold exactly.", func(s readthrough.Stats) uint64 { return s.Uncacheable })
	add("redis_errors", "Redis failures.", func(s readthrough.Stats) uint64 { return s.Errors })
	add("invalidations", "Rows invalidated through the repository.", func(s readthrough.Stats) uint64 { return s.Invalidations })
	add("writes", "Writes through the repository that committed.", func(s readthrough.Stats) uint64 { return s.Writes })
	add("near_hits", "Reads answered by the near cache.", func(s readthrough.Stats) uint64 { return s.NearHits })
	add("near_misses", "Reads of a near-cached model that went on to Redis.", func(s readthrough.Stats) uint64 { return s.NearMisses })
	add("near_evictions", "Near-cache entries evicted by the model's bound.", func(s readthrough.Stats) uint64 { return s.NearEvictions })
	lookup := func(name, desc string, value func(readthrough.LookupStats) uint64) {
		add(name, desc, func(s readthrough.Stats) uint64 { return value(s.Unique) })
		counters[len(counters)-1].kind = "unique"
		counters = append(counters, counter{inst: counters[len(counters)-1].inst, kind: "list",
			value: func(s readthrough.Stats) uint64 { return value(s.List) }})
	}
	lookup("lookup.hits", "Lookups whose entry was cached.", func(s readthrough.LookupStats) uint64 { return s.Hits })
	lookup("lookup.misses", "Lookups that found no entry.", func(s readthrough.LookupStats) uint64 { return s.Misses })
	lookup("lookup.stale", "Lookup entries found stale by the check on read.", func(s readthrough.LookupStats) uint64 { return s.Stale })
	lookup("lookup.over_cap", "Lists longer than ListCap, not cached.", func(s readthrough.LookupStats) uint64 { return s.OverCap })
	pending, err := o.meter.Int64ObservableGauge("pgcache.cache.writeback.pending",
		metric.WithDescription("Entries in the write-back journal the cache's write-back models write to (shared by them)."))
	if err != nil && errs == nil {
		errs = fmt.Errorf("pgcacheotel: gauge writeback.pending: %w", err)
	}
	if errs != nil {
		return nil, errs
	}
	insts = append(insts, pending)
	return o.meter.RegisterCallback(func(ctx context.Context, obs metric.Observer) error {
		for model, s := range cache.ModelStats() {
			for _, c := range counters {
				kv := []attribute.KeyValue{AttrModel.String(model)}
				if c.kind != "" {
					kv = append(kv, AttrKind.String(c.kind))
				}
				obs.ObserveInt64(c.inst, int64(c.value(s)), metric.WithAttributes(kv...))
			}
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		n, ok, err := cache.WriteBackBacklog(ctx)
		if err != nil {
			return err
		}
		if ok {
			obs.ObserveInt64(pending, n)
		}
		return nil
	}, insts...)
}
