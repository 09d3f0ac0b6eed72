package observe_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pgcache/pgcache/extra/pgcacheotel"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// otelEnv is an OTel observer whose spans and metrics stay in memory.
type otelEnv struct {
	obs    *pgcacheotel.Observer
	spans  *tracetest.InMemoryExporter
	reader *sdkmetric.ManualReader
}

func newOtel(t testing.TB) *otelEnv {
	t.Helper()
	o := &otelEnv{spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(o.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(o.reader))
	t.Cleanup(func() {
		tp.Shutdown(context.Background())
		mp.Shutdown(context.Background())
	})
	var err error
	if o.obs, err = pgcacheotel.NewObserver(pgcacheotel.Options{MeterProvider: mp, TracerProvider: tp}); err != nil {
		t.Fatal(err)
	}
	return o
}

// span is what the tests look at in a span: its name, attributes, status and parent.
type span struct {
	name, model, op, outcome string
	failed                   bool
	stub                     tracetest.SpanStub
}

func (o *otelEnv) takeSpans() []span {
	var out []span
	for _, s := range o.spans.GetSpans() {
		sp := span{name: s.Name, failed: s.Status.Code == codes.Error, stub: s}
		for _, a := range s.Attributes {
			switch a.Key {
			case pgcacheotel.AttrModel:
				sp.model = a.Value.AsString()
			case pgcacheotel.AttrOp:
				sp.op = a.Value.AsString()
			case pgcacheotel.AttrOutcome:
				sp.outcome = a.Value.AsString()
			}
		}
		out = append(out, sp)
	}
	o.spans.Reset()
	return out
}

// TestOpenTelemetrySpans checks the spans of misses, fills and writes against real
// servers: a miss makes a miss span whose child is the fill, a hit makes none, a
// write makes a write span (whose child, under write-through, is the refill), and a
// failed write's span records its error.
func TestOpenTelemetrySpans(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	o := newOtel(t)
	c := e.cache(t, o.obs)
	widgets := register[Widget](t, c, readthrough.ModelOptions{})
	gadgets := register[Gadget](t, c, readthrough.ModelOptions{WritePolicy: writepolicy.WriteThrough})

	get(t, widgets, 1, true)
	spans := o.takeSpans()
	if len(spans) != 2 {
		t.Fatalf("a miss made %d spans, want a fill and a miss: %+v", len(spans), spans)
	}
	fill, miss := spans[0], spans[1] // a child ends first
	if miss.name != "pgcache.miss" || miss.model != "Widget" || miss.op != "miss" || miss.outcome != "found" || miss.failed {
		t.Errorf("miss span %+v", miss)
	}
	if fill.name != "pgcache.fill" || fill.model != "Widget" || fill.outcome != "stored" || fill.failed {
		t.Errorf("fill span %+v", fill)
	}
	if fill.stub.Parent.SpanID() != miss.stub.SpanContext.SpanID() {
		t.Errorf("the fill's parent is %v, want the miss %v", fill.stub.Parent.SpanID(), miss.stub.SpanContext.SpanID())
	}

	get(t, widgets, 1, true)
	if spans := o.takeSpans(); len(spans) != 0 {
		t.Errorf("a hit made spans: %+v", spans)
	}

	get(t, widgets, 2, false)
	if spans := o.takeSpans(); len(spans) != 2 || spans[1].outcome != "not_found" || spans[0].outcome != "stored" {
		t.Errorf("a miss of a row that does not exist: %+v", spans)
	}

	if err := widgets.Save(ctx, &Widget{ID: 1, Name: "renamed"}); err != nil {
		t.Fatal(err)
	}
	if spans := o.takeSpans(); len(spans) != 1 || spans[0].name != "pgcache.write" || spans[0].op != "save" ||
		spans[0].outcome != "ok" || spans[0].model != "Widget" {
		t.Errorf("a Save: %+v", spans)
	}

	// A write that Postgres refuses (a duplicate key).
	if err := widgets.Create(ctx, &Widget{ID: 1}); err == nil {
		t.Fatal("Create of an existing id succeeded")
	}
	if spans := o.takeSpans(); len(spans) != 1 || spans[0].op != "create" || spans[0].outcome != "error" || !spans[0].failed ||
		len(spans[0].stub.Events) == 0 {
		t.Errorf("a failed Create: %+v", spans)
	}

	// Write-through: the refill is a child of the write.
	if err := gadgets.Save(ctx, &Gadget{ID: 1, Name: "new"}); err != nil {
		t.Fatal(err)
	}
	spans = o.takeSpans()
	if len(spans) != 2 || spans[0].name != "pgcache.fill" || spans[1].name != "pgcache.write" ||
		spans[0].stub.Parent.SpanID() != spans[1].stub.SpanContext.SpanID() || spans[0].outcome != "stored" {
		t.Errorf("a write-through Save: %+v", spans)
	}

	if err := widgets.Delete(ctx, int64(1)); err != nil {
		t.Fatal(err)
	}
	if spans := o.takeSpans(); len(spans) != 1 || spans[0].op != "delete" || spans[0].outcome != "ok" {
		t.Errorf("a Delete: %+v", spans)
	}

	// GetMany: its misses make one miss span, with one fill for the ids it leased.
	if _, err := widgets.GetMany(ctx, int64(1), int64(3)); err != nil {
		t.Fatal(err)
	}
	spans = o.takeSpans()
	if len(spans) != 2 || spans[0].name != "pgcache.fill" || spans[1].name != "pgcache.miss" || spans[1].outcome != "found" {
		t.Errorf("a GetMany of two misses: %+v", spans)
	}
}

// TestOpenTelemetryMetrics checks the read and miss histograms and the counters
// RegisterCache reports, read through a ManualReader.
func TestOpenTelemetryMetrics(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	o := newOtel(t)
	c := e.cache(t, o.obs)
	widgets := register[Widget](t, c, readthrough.ModelOptions{})
	ledgers := register[Ledger](t, c, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	reg, err := o.obs.RegisterCache(c, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()

	get(t, widgets, 1, true)  // miss
	get(t, widgets, 1, true)  // hit
	get(t, widgets, 2, false) // miss
	get(t, widgets, 2, false) // negative hit
	if err := widgets.Save(ctx, &Widget{ID: 1, Name: "renamed"}); err != nil {
		t.Fatal(err)
	}
	if err := ledgers.Save(ctx, &Ledger{ID: 1, Balance: 1}); err != nil {
		t.Fatal(err)
	}
	if err := ledgers.Save(ctx, &Ledger{ID: 2, Balance: 2}); err != nil {
		t.Fatal(err)
	}

	var rm metricdata.ResourceMetrics
	if err := o.reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	model := func(m string) attribute.KeyValue { return pgcacheotel.AttrModel.String(m) }
	outcome := func(o string) attribute.KeyValue { return pgcacheotel.AttrOutcome.String(o) }
	for _, tc := range []struct {
		name  string
		attrs []attribute.KeyValue
		want  int64
	}{
		{"pgcache.cache.read.duration", []attribute.KeyValue{model("Widget"), outcome("hit")}, 1},
		{"pgcache.cache.read.duration", []attribute.KeyValue{model("Widget"), outcome("negative_hit")}, 1},
		{"pgcache.cache.read.duration", []attribute.KeyValue{model("Widget"), outcome("miss")}, 2},
		{"pgcache.cache.miss.duration", []attribute.KeyValue{model("Widget")}, 2},
		{"pgcache.cache.hits", []attribute.KeyValue{model("Widget")}, 1},
		{"pgcache.cache.negative_hits", []attribute.KeyValue{model("Widget")}, 1},
		{"pgcache.cache.misses", []attribute.KeyValue{model("Widget")}, 2},
		{"pgcache.cache.fills", []attribute.KeyValue{model("Widget")}, 2},
		{"pgcache.cache.writes", []attribute.KeyValue{model("Widget")}, 1},
		{"pgcache.cache.writes", []attribute.KeyValue{model("Ledger")}, 2},
		{"pgcache.cache.lookup.hits", []attribute.KeyValue{model("Widget"), pgcacheotel.AttrKind.String("list")}, 0},
		{"pgcache.cache.writeback.pending", nil, 2},
	} {
		got, ok := point(rm, tc.name, tc.attrs)
		if !ok || got != tc.want {
			t.Errorf("%s %v = %d (found %v), want %d", tc.name, tc.attrs, got, ok, tc.want)
		}
	}
}

// point returns the value (a sum or a gauge) or the count (a histogram) of the data
// point of metric name whose attributes are exactly attrs.
func point(rm metricdata.ResourceMetrics, name string, attrs []attribute.KeyValue) (int64, bool) {
	want := attribute.NewSet(attrs...)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					if p.Attributes.Equals(&want) {
						return int64(p.Count), true
					}
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					if p.Attributes.Equals(&want) {
						return p.Value, true
					}
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					if p.Attributes.Equals(&want) {
						return p.Value, true
					}
				}
			}
		}
	}
	return 0, false
}
