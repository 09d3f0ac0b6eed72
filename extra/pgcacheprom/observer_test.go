package pgcacheprom_test

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/pgcache/pgcache/extra/pgcacheprom"
	"github.com/pgcache/pgcache/readthrough"
)

// TestObserver feeds the Observer directly (the tests against real servers are in
// integration/observe) and checks the histograms by label, with const labels and
// custom buckets.
func TestObserver(t *testing.T) {
	obs := pgcacheprom.NewObserver(pgcacheprom.Options{ConstLabels: prometheus.Labels{"cache": "main"}, Buckets: []float64{0.001, 0.01}})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(obs)
	ctx := context.Background()
	obs.ObserveRead(ctx, "Widget", readthrough.OutcomeHit, 500*time.Microsecond)
	obs.ObserveRead(ctx, "Widget", readthrough.OutcomeHit, 5*time.Millisecond)
	obs.ObserveRead(ctx, "Gadget", readthrough.OutcomeNegativeHit, 20*time.Millisecond)
	obs.ObserveRead(ctx, "Gadget", readthrough.OutcomeOK, time.Millisecond) // not a read's outcome: ignored
	_, end := obs.StartOp(ctx, readthrough.OpMiss, "Widget")
	end(readthrough.OutcomeFound, nil)
	_, end = obs.StartOp(ctx, readthrough.OpFill, "Widget") // not timed
	end(readthrough.OutcomeStored, nil)

	for _, tc := range []struct {
		name, model, outcome string
		count                uint64
		sum                  float64
		buckets              []uint64
	}{
		{"pgcache_cache_read_duration_seconds", "Widget", "hit", 2, 0.0055, []uint64{1, 2}},
		{"pgcache_cache_read_duration_seconds", "Widget", "miss", 0, 0, []uint64{0, 0}},
		{"pgcache_cache_read_duration_seconds", "Gadget", "negative_hit", 1, 0.02, []uint64{0, 0}},
		{"pgcache_cache_miss_duration_seconds", "Widget", "", 1, -1, nil},
		{"pgcache_cache_miss_duration_seconds", "Gadget", "", 0, 0, []uint64{0, 0}},
	} {
		h := histogram(t, reg, tc.name, tc.model, tc.outcome)
		if h == nil {
			t.Errorf("no %s{model=%s,outcome=%s}", tc.name, tc.model, tc.outcome)
			continue
		}
		var buckets []uint64
		for _, b := range h.GetBucket() {
			buckets = append(buckets, b.GetCumulativeCount())
		}
		if h.GetSampleCount() != tc.count || tc.sum >= 0 && math.Abs(h.GetSampleSum()-tc.sum) > 1e-9 ||
			tc.buckets != nil && !slices.Equal(buckets, tc.buckets) {
			t.Errorf("%s{model=%s,outcome=%s}: count %d, sum %v, buckets %v; want %d, %v, %v",
				tc.name, tc.model, tc.outcome, h.GetSampleCount(), h.GetSampleSum(), buckets, tc.count, tc.sum, tc.buckets)
		}
	}
	if h := histogram(t, reg, "pgcache_cache_read_duration_seconds", "Gadget", "ok"); h != nil {
		t.Error("a read was recorded with an op's outcome")
	}
	if n := testutil.CollectAndCount(obs, "pgcache_cache_miss_duration_seconds"); n != 2 {
		t.Errorf("miss histograms: %d series, want one per model seen (2)", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// histogram returns the histogram of family name with labels model and outcome ("":
// no outcome label) and const label cache="main".
func histogram(t *testing.T, reg prometheus.Gatherer, name, model, outcome string) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["cache"] == "main" && labels["model"] == model && labels["outcome"] == outcome {
				return m.GetHistogram()
			}
		}
	}
	return nil
}

// BenchmarkObserveRead is what the Observer adds to a read, without the read: the
// lookup of the model's histogram and one observation.
func BenchmarkObserveRead(b *testing.B) {
	obs := pgcacheprom.NewObserver(pgcacheprom.Options{})
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			obs.ObserveRead(ctx, "Widget", readthrough.OutcomeHit, 300*time.Microsecond)
		}
	})
}
