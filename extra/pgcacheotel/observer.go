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
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgcache/pgcache/extra/internal/modelstats"
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
	attrs      *modelstats.PerModel[*modelAttrs]
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
		opts.Buckets = modelstats.DefaultBuckets()
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
	o.attrs = modelstats.NewPerModel(func(model string) *modelAttrs {
		a := &modelAttrs{model: AttrModel.String(model), miss: metric.WithAttributeSet(attribute.NewSet(AttrModel.String(model)))}
		for i := 1; i < outcomes; i++ {
			a.read[i] = metric.WithAttributeSet(attribute.NewSet(AttrModel.String(model), AttrOutcome.String(readthrough.Outcome(i).String())))
		}
		return a
	})
	return o, nil
}

// ObserveRead records d in pgcache.cache.read.duration (readthrough.Observer).
func (o *Observer) ObserveRead(ctx context.Context, model string, outcome readthrough.Outcome, d time.Duration) {
	if int(outcome) >= outcomes || outcome == 0 {
		return
	}
	o.read.Record(ctx, d.Seconds(), o.attrs.Get(model).read[outcome])
}

// StartOp starts the op's span, and for a miss times it for pgcache.cache.miss.duration
// (readthrough.Observer).
func (o *Observer) StartOp(ctx context.Context, op readthrough.Op, model string) (context.Context, func(readthrough.Outcome, error)) {
	a := o.attrs.Get(model)
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
	instrument := func(name, desc string) metric.Int64ObservableCounter {
		c, err := o.meter.Int64ObservableCounter("pgcache.cache."+name, metric.WithDescription(desc))
		if err != nil && errs == nil {
			errs = fmt.Errorf("pgcacheotel: counter %s: %w", name, err)
		}
		insts = append(insts, c)
		return c
	}
	for _, c := range modelstats.Counters() {
		counters = append(counters, counter{inst: instrument(c.Name, c.Help), value: c.Value})
	}
	for _, c := range modelstats.LookupCounters() {
		inst := instrument("lookup."+c.Name, c.Help)
		for _, kind := range modelstats.Kinds() {
			counters = append(counters, counter{inst: inst, kind: kind,
				value: func(s readthrough.Stats) uint64 { return c.ValueOf(s, kind) }})
		}
	}
	pending, err := o.meter.Int64ObservableGauge("pgcache.cache.writeback.pending",
		metric.WithDescription(modelstats.WriteBackPendingHelp))
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
