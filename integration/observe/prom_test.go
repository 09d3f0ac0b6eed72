package observe_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/extra/pgcacheprom"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// TestPrometheus reads, misses, writes and corrupts entries of three models against
// real servers, then scrapes a registry holding the Collector and the Observer and
// checks each model's counters, the histograms' counts by outcome, and the
// write-back journal's length.
func TestPrometheus(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	obs := pgcacheprom.NewObserver(pgcacheprom.Options{})
	c := e.cache(t, obs)
	widgets := register[Widget](t, c, readthrough.ModelOptions{})
	gadgets := register[Gadget](t, c, readthrough.ModelOptions{})
	ledgers := register[Ledger](t, c, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(pgcacheprom.NewCollector(c, pgcacheprom.Options{}), obs)

	get(t, widgets, 1, true)  // miss, fill
	get(t, widgets, 1, true)  // hit
	get(t, widgets, 2, false) // miss, negative fill
	get(t, widgets, 2, false) // negative hit
	if err := widgets.Save(ctx, &Widget{ID: 1, Name: "renamed", Price: 7}); err != nil {
		t.Fatal(err)
	}
	get(t, widgets, 1, true) // miss (the write invalidated it), fill
	key, _ := widgets.Key(int64(3))
	if err := e.rdb.Set(ctx, key, "garbage", 0).Err(); err != nil {
		t.Fatal(err)
	}
	get(t, widgets, 3, true) // decode error, miss, fill
	if rows, err := widgets.GetMany(ctx, int64(1), int64(3)); err != nil || len(rows) != 2 {
		t.Fatalf("GetMany = %d rows, %v", len(rows), err)
	}
	get(t, gadgets, 1, true) // miss, fill
	get(t, gadgets, 1, true) // hit
	if err := ledgers.Save(ctx, &Ledger{ID: 1, Balance: 5}); err != nil {
		t.Fatal(err)
	}
	get(t, ledgers, 1, true) // hit: the pending write is cached

	expect := `
# HELP pgcache_cache_hits_total Reads answered from Redis with a row.
# TYPE pgcache_cache_hits_total counter
pgcache_cache_hits_total{model="Gadget"} 1
pgcache_cache_hits_total{model="Ledger"} 1
pgcache_cache_hits_total{model="Widget"} 3
# HELP pgcache_cache_negative_hits_total Reads answered from Redis with "no such row" (soft-deleted rows in the default scope included).
# TYPE pgcache_cache_negative_hits_total counter
pgcache_cache_negative_hits_total{model="Gadget"} 0
pgcache_cache_negative_hits_total{model="Ledger"} 0
pgcache_cache_negative_hits_total{model="Widget"} 1
# HELP pgcache_cache_misses_total Reads that found nothing usable in Redis.
# TYPE pgcache_cache_misses_total counter
pgcache_cache_misses_total{model="Gadget"} 1
pgcache_cache_misses_total{model="Ledger"} 0
pgcache_cache_misses_total{model="Widget"} 4
# HELP pgcache_cache_fills_total Entries stored after a load.
# TYPE pgcache_cache_fills_total counter
pgcache_cache_fills_total{model="Gadget"} 1
pgcache_cache_fills_total{model="Ledger"} 0
pgcache_cache_fills_total{model="Widget"} 4
# HELP pgcache_cache_decode_errors_total Cached entries that could not be decoded (deleted, read as misses).
# TYPE pgcache_cache_decode_errors_total counter
pgcache_cache_decode_errors_total{model="Gadget"} 0
pgcache_cache_decode_errors_total{model="Ledger"} 0
pgcache_cache_decode_errors_total{model="Widget"} 1
# HELP pgcache_cache_writes_total Writes through the repository that committed (write-back: that Redis acknowledged).
# TYPE pgcache_cache_writes_total counter
pgcache_cache_writes_total{model="Gadget"} 0
pgcache_cache_writes_total{model="Ledger"} 1
pgcache_cache_writes_total{model="Widget"} 1
# HELP pgcache_cache_writeback_pending Entries in the write-back journal the cache's write-back models write to (shared by them): writes not yet applied to Postgres, and applied ones behind an unacknowledged one. Present only when the cache has write-back models.
# TYPE pgcache_cache_writeback_pending gauge
pgcache_cache_writeback_pending 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expect),
		"pgcache_cache_hits_total", "pgcache_cache_negative_hits_total", "pgcache_cache_misses_total", "pgcache_cache_fills_total",
		"pgcache_cache_decode_errors_total", "pgcache_cache_writes_total", "pgcache_cache_writeback_pending"); err != nil {
		t.Fatal(err)
	}
	// Every per-model counter is the cache's own, whatever the scenario above left in it.
	checkAgainstStats(t, reg, c)

	for _, tc := range []struct {
		model, outcome string
		want           uint64
	}{
		{"Widget", "hit", 2}, // a Get and the GetMany
		{"Widget", "negative_hit", 1},
		{"Widget", "miss", 4},
		{"Widget", "error", 0},
		{"Gadget", "hit", 1},
		{"Gadget", "miss", 1},
		{"Ledger", "hit", 1},
	} {
		if got := histCount(t, reg, "pgcache_cache_read_duration_seconds", "model", tc.model, "outcome", tc.outcome); got != tc.want {
			t.Errorf("read_duration_seconds{model=%s,outcome=%s} count = %d, want %d", tc.model, tc.outcome, got, tc.want)
		}
	}
	for model, want := range map[string]uint64{"Widget": 4, "Gadget": 1} {
		if got := histCount(t, reg, "pgcache_cache_miss_duration_seconds", "model", model); got != want {
			t.Errorf("miss_duration_seconds{model=%s} count = %d, want %d", model, got, want)
		}
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// TestPrometheusRedisDown stops the cache's Redis: a read falls back to Postgres and
// is counted as a Redis error with outcome "error", and a scrape, unable to read the
// journal's length, leaves the pending gauge out and counts a scrape error instead of
// failing.
func TestPrometheusRedisDown(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	rd := integration.NewRedis(t, integration.RedisOptions{})
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr(), MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	obs := pgcacheprom.NewObserver(pgcacheprom.Options{})
	c, err := readthrough.New(e.db, rdb, readthrough.Options{RedisTimeout: 500 * time.Millisecond, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	widgets := register[Widget](t, c, readthrough.ModelOptions{})
	register[Ledger](t, c, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(pgcacheprom.NewCollector(c, pgcacheprom.Options{WriteBackTimeout: 500 * time.Millisecond}), obs)

	get(t, widgets, 1, true)
	if got := gaugeValue(t, reg, "pgcache_cache_writeback_pending"); got != "0" {
		t.Fatalf("pending with Redis up = %s, want 0", got)
	}
	if err := rd.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	get(t, widgets, 1, true) // from Postgres
	snap := snapshot(t, reg) // one scrape
	if got := histCount(t, snap, "pgcache_cache_read_duration_seconds", "model", "Widget", "outcome", "error"); got != 1 {
		t.Errorf("read_duration_seconds{outcome=error} count = %d, want 1", got)
	}
	if got := counterValue(t, snap, "pgcache_cache_redis_errors_total", "model", "Widget"); got < 1 {
		t.Errorf("redis_errors_total{model=Widget} = %v, want at least 1", got)
	}
	if got := gaugeValue(t, snap, "pgcache_cache_writeback_pending"); got != "absent" {
		t.Errorf("pending with Redis down = %s, want it left out", got)
	}
	if got := counterValue(t, snap, "pgcache_cache_scrape_errors_total"); got != 1 {
		t.Errorf("scrape_errors_total = %v, want 1 (the scrape above)", got)
	}
}

// checkAgainstStats checks every per-model counter the registry holds against
// Cache.ModelStats.
func checkAgainstStats(t *testing.T, reg prometheus.Gatherer, c *readthrough.Cache) {
	t.Helper()
	fields := map[string]func(readthrough.Stats) uint64{
		"hits": func(s readthrough.Stats) uint64 { return s.Hits }, "negative_hits": func(s readthrough.Stats) uint64 { return s.NegativeHits },
		"misses": func(s readthrough.Stats) uint64 { return s.Misses }, "loads": func(s readthrough.Stats) uint64 { return s.Loads },
		"fills": func(s readthrough.Stats) uint64 { return s.Fills }, "fills_refused": func(s readthrough.Stats) uint64 { return s.FillsRefused },
		"stampede_waits": func(s readthrough.Stats) uint64 { return s.StampedeWaits }, "decode_errors": func(s readthrough.Stats) uint64 { return s.DecodeErrors },
		"uncacheable": func(s readthrough.Stats) uint64 { return s.Uncacheable }, "redis_errors": func(s readthrough.Stats) uint64 { return s.Errors },
		"invalidations": func(s readthrough.Stats) uint64 { return s.Invalidations }, "writes": func(s readthrough.Stats) uint64 { return s.Writes },
		"near_hits": func(s readthrough.Stats) uint64 { return s.NearHits }, "near_misses": func(s readthrough.Stats) uint64 { return s.NearMisses },
		"near_evictions": func(s readthrough.Stats) uint64 { return s.NearEvictions },
	}
	stats := c.ModelStats()
	var b strings.Builder
	var names []string
	for name, f := range fields {
		full := "pgcache_cache_" + name + "_total"
		names = append(names, full)
		fmt.Fprintf(&b, "# TYPE %s counter\n", full)
		for model, s := range stats {
			fmt.Fprintf(&b, "%s{model=%q} %d\n", full, model, f(s))
		}
	}
	// GatherAndCompare compares HELP too: take it from the registry.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var withHelp strings.Builder
	for _, mf := range mfs {
		if fields[strings.TrimSuffix(strings.TrimPrefix(mf.GetName(), "pgcache_cache_"), "_total")] != nil {
			fmt.Fprintf(&withHelp, "# HELP %s %s\n", mf.GetName(), mf.GetHelp())
		}
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(withHelp.String()+b.String()), names...); err != nil {
		t.Error(err)
	}
}

// snapshot scrapes reg once, for several looks at one scrape.
func snapshot(t *testing.T, reg prometheus.Gatherer) prometheus.Gatherer {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return mfs, nil })
}

// find returns the metric of family name whose labels include the pairs given.
func find(t *testing.T, reg prometheus.Gatherer, name string, pairs ...string) (*dto.MetricFamily, *dto.Metric) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i < len(pairs); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == pairs[i] && l.GetValue() == pairs[i+1]
				}
				if !found {
					continue metrics
				}
			}
			return mf, m
		}
	}
	return nil, nil
}

func histCount(t *testing.T, reg prometheus.Gatherer, name string, pairs ...string) uint64 {
	t.Helper()
	_, m := find(t, reg, name, pairs...)
	if m == nil {
		return 0
	}
	return m.GetHistogram().GetSampleCount()
}

func counterValue(t *testing.T, reg prometheus.Gatherer, name string, pairs ...string) float64 {
	t.Helper()
	_, m := find(t, reg, name, pairs...)
	if m == nil {
		t.Fatalf("no %s %v", name, pairs)
	}
	return m.GetCounter().GetValue()
}

// gaugeValue returns the gauge's value as text, "absent" when it was not collected.
func gaugeValue(t *testing.T, reg prometheus.Gatherer, name string) string {
	t.Helper()
	_, m := find(t, reg, name)
	if m == nil {
		return "absent"
	}
	return fmt.Sprint(m.GetGauge().GetValue())
}

// TestPrometheusNearHit reads a near-cached model until the near cache answers: the
// read is recorded with outcome near_hit and counted in near_hits_total, not in
// hits_total.
func TestPrometheusNearHit(t *testing.T) {
	e := newEnv(t)
	obs := pgcacheprom.NewObserver(pgcacheprom.Options{})
	c := e.cache(t, obs)
	gadgets := register[Gadget](t, c, readthrough.ModelOptions{Near: readthrough.NearOptions{MaxEntries: 100}})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(pgcacheprom.NewCollector(c, pgcacheprom.Options{}), obs)
	reads := uint64(0)
	integration.Eventually(t, "a read answered by the near cache", func() bool {
		get(t, gadgets, 1, true)
		reads++
		return histCount(t, reg, "pgcache_cache_read_duration_seconds", "model", "Gadget", "outcome", "near_hit") > 0
	})
	snap := snapshot(t, reg)
	near := histCount(t, snap, "pgcache_cache_read_duration_seconds", "model", "Gadget", "outcome", "near_hit")
	hits := histCount(t, snap, "pgcache_cache_read_duration_seconds", "model", "Gadget", "outcome", "hit")
	misses := histCount(t, snap, "pgcache_cache_read_duration_seconds", "model", "Gadget", "outcome", "miss")
	if near+hits+misses != reads {
		t.Errorf("%d reads recorded as %d near hits, %d hits, %d misses", reads, near, hits, misses)
	}
	if got := counterValue(t, snap, "pgcache_cache_near_hits_total", "model", "Gadget"); got != float64(near) {
		t.Errorf("near_hits_total = %v, want %d", got, near)
	}
	if got := counterValue(t, snap, "pgcache_cache_hits_total", "model", "Gadget"); got != float64(hits) {
		t.Errorf("hits_total = %v, want the %d Redis hits", got, hits)
	}
}
