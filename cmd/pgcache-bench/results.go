package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// results are the figures of one run. Fields that were not measured are null.
type results struct {
	Machine string `json:"machine"`
	// Reached says how the servers were reached: at the containers' own addresses
	// (nothing between client and server), through Docker's published ports (its port
	// proxy in every round trip), or existing servers.
	Reached string `json:"servers_reached"`

	RawRedisGetP50us float64 `json:"raw_redis_get_p50_us"`
	CachedHitP50us   float64 `json:"cached_hit_p50_us"`
	GormFirstP50us   float64 `json:"gorm_first_p50_us"`
	HitOverheadRatio float64 `json:"hit_overhead_ratio"`

	RawRedisGetOpsS16 float64 `json:"raw_redis_get_ops_s_16"`
	GormFirstOpsS16   float64 `json:"gorm_first_ops_s_16"`
	CachedHitOpsS16   float64 `json:"cached_hit_ops_s_16"`
	ThroughputRatio16 float64 `json:"throughput_ratio_16"`
	// Cached hits against the raw GET of the same bytes, in the same run.
	HitVsRawOpsRatio16 float64 `json:"hit_vs_raw_ops_ratio_16"`
	// The raw GET of the same bytes through go-redis' AutoPipeliner (its blocking
	// face), as concurrent hits are sent: the bound for hits batched that way, in the
	// same run.
	RawRedisGetPipelinedOpsS16  float64 `json:"raw_redis_get_autopipelined_ops_s_16"`
	HitVsRawPipelinedOpsRatio16 float64 `json:"hit_vs_raw_autopipelined_ops_ratio_16"`
	HitAllocs                   float64 `json:"hit_allocs"`     // allocations per cached hit (Get)
	RawGetAllocs                float64 `json:"raw_get_allocs"` // allocations per raw go-redis GET
	// Allocations per GET of the same entry and its decode into the model with the
	// default codec, nothing else (getdecode.go): the bound for HitAllocs.
	GetDecodeAllocs    float64 `json:"get_decode_allocs"`
	MultiGet100Speedup float64 `json:"multiget_100_speedup"`
	// A miss that fills against a cache-aside miss (GET, GORM First, SET) of the same
	// row, alternating in the same run (miss.go).
	MissFillP50us         float64 `json:"miss_fill_p50_us"`
	CacheAsideMissP50us   float64 `json:"cache_aside_miss_p50_us"`
	MissVsCacheAsideRatio float64 `json:"miss_vs_cache_aside_ratio"`

	InvalidationLagP50ms float64 `json:"invalidation_lag_p50_ms"`
	InvalidationLagP99ms float64 `json:"invalidation_lag_p99_ms"`
	InvalidationCommitsS float64 `json:"invalidation_commit_rate"`
	InvalidationRowsS    float64 `json:"invalidation_rows_per_s"`
	// A backlog of small transactions committed while the worker was stopped (backlog.go).
	InvalidationBacklogRowsS float64 `json:"invalidation_backlog_rows_per_s"`

	StampedeDBQueries int `json:"stampede_db_queries"`

	TwoRawGetsP50us         float64 `json:"two_raw_gets_p50_us"`
	UniqueHitP50us          float64 `json:"unique_hit_p50_us"`
	UniqueHitRatio          float64 `json:"unique_hit_ratio"`
	ListHit20P50us          float64 `json:"list_hit_20_p50_us"`
	GormFindListP50us       float64 `json:"gorm_find_list_20_p50_us"`
	ListHit20OpsS16         float64 `json:"list_hit_20_ops_s_16"`
	GormFindListOpsS16      float64 `json:"gorm_find_list_20_ops_s_16"`
	ListHitVsFindOpsRatio16 float64 `json:"list_hit_vs_find_ops_ratio_16"`
	// The same list hits with the model's near cache on.
	ListHit20NearP50us          float64 `json:"list_hit_20_near_p50_us"`
	ListHit20NearOpsS16         float64 `json:"list_hit_20_near_ops_s_16"`
	ListHitNearVsFindOpsRatio16 float64 `json:"list_hit_near_vs_find_ops_ratio_16"`
	NearHitP50ns                float64 `json:"near_hit_p50_ns"`
	NearHitOpsS16               float64 `json:"near_hit_ops_s_16"`
	NearHitRatioToRedis         float64 `json:"near_hit_ratio_to_redis_hit_16"`
	NearAllocsPerHit            float64 `json:"near_allocs_per_hit"`
	NearInvalidationP50ms       float64 `json:"near_invalidation_p50_ms"`
	NearInvalidationP99ms       float64 `json:"near_invalidation_p99_ms"`
	// How long after another client's DEL a local copy is still served (compare.go).
	NearStaleP50ms float64 `json:"near_stale_p50_ms"`
	NearStaleP99ms float64 `json:"near_stale_p99_ms"`

	// The other libraries' local tiers on the same row bytes (compare.go).
	GoRedisCacheHitP50ns     float64 `json:"goredis_cache_local_hit_p50_ns"`
	GoRedisCacheHitOpsS16    float64 `json:"goredis_cache_local_hit_ops_s_16"`
	GoRedisCacheAllocsPerHit float64 `json:"goredis_cache_allocs_per_local_hit"`
	GoRedisCacheStaleP50ms   float64 `json:"goredis_cache_stale_p50_ms"`
	GoRedisCacheStaleP99ms   float64 `json:"goredis_cache_stale_p99_ms"`
	RueidisHitP50ns          float64 `json:"rueidis_cache_hit_p50_ns"`
	RueidisHitOpsS16         float64 `json:"rueidis_cache_hit_ops_s_16"`
	RueidisAllocsPerHit      float64 `json:"rueidis_allocs_per_cache_hit"`
	RueidisStaleP50ms        float64 `json:"rueidis_stale_p50_ms"`
	RueidisStaleP99ms        float64 `json:"rueidis_stale_p99_ms"`

	WritebackSaveP50us     *float64 `json:"writeback_save_p50_us"`
	WritebackFlushRowsPerS *float64 `json:"writeback_flush_rows_per_s"`

	// The HTTP edge (off with -varnish=false):
	// PURGE by tag sent → Varnish serving the backend's new body (varnish.go).
	VarnishPurgeP50ms *float64 `json:"varnish_purge_p50_ms"`
	VarnishPurgeP99ms *float64 `json:"varnish_purge_p99_ms"`
	// Commit (raw SQL UPDATE) → Varnish serving the new body through the whole chain:
	// httpcache middleware, worker with a varnish.Purger (chain.go).
	VarnishCommitToServedP50ms *float64 `json:"varnish_commit_to_served_p50_ms"`
	VarnishCommitToServedP99ms *float64 `json:"varnish_commit_to_served_p99_ms"`
	// One GET in process: served by httpcache, by the handler without it (which reads
	// one row through the read-through cache, a Redis hit), and a 304 (chain.go).
	HTTPHitP50us      *float64 `json:"http_hit_p50_us"`
	HTTPUncachedP50us *float64 `json:"http_uncached_p50_us"`
	HTTP304P50us      *float64 `json:"http_304_p50_us"`

	lagHistogram []time.Duration
}

func (r *results) print(w io.Writer) {
	row := func(name string, v any, note string) { fmt.Fprintf(w, "%-34s %14v  %s\n", name, v, note) }
	f := func(x float64) string { return fmt.Sprintf("%.1f", x) }
	fmt.Fprintf(w, "pgcache benchmark on %s\nservers reached: %s\n\n", r.Machine, r.Reached)
	row("raw go-redis GET p50 (µs)", f(r.RawRedisGetP50us), "baseline, 1 goroutine")
	row("cached hit p50 (µs)", f(r.CachedHitP50us), fmt.Sprintf("%.2f× the raw GET", r.HitOverheadRatio))
	row("GORM First p50 (µs)", f(r.GormFirstP50us), "uncached baseline")
	row("raw GET ops/s, 16 goroutines", f(r.RawRedisGetOpsS16), "")
	row("GORM First ops/s, 16 goroutines", f(r.GormFirstOpsS16), "")
	row("raw GET autopipelined ops/s, 16 goroutines", f(r.RawRedisGetPipelinedOpsS16), "go-redis' AutoPipeliner")
	row("cached hit ops/s, 16 goroutines", f(r.CachedHitOpsS16), fmt.Sprintf("%.2f× GORM First, %.2f× the raw GET, %.2f× autopipelined", r.ThroughputRatio16, r.HitVsRawOpsRatio16, r.HitVsRawPipelinedOpsRatio16))
	row("allocations per hit / raw GET", fmt.Sprintf("%.1f / %.1f", r.HitAllocs, r.RawGetAllocs), "")
	row("allocations per GET + decode", f(r.GetDecodeAllocs), "the same entry, default codec: the bound for a hit")
	row("miss + fill p50 (µs)", f(r.MissFillP50us), fmt.Sprintf("%.2f× a cache-aside miss (GET, First, SET: %.1f)", r.MissVsCacheAsideRatio, r.CacheAsideMissP50us))
	row("multi-get of 100, cold", f(r.MultiGet100Speedup)+"×", "faster than 100 cold Gets")
	row("invalidation lag p50 (ms)", f(r.InvalidationLagP50ms), fmt.Sprintf("commit → key deleted, at %.0f commits/s", r.InvalidationCommitsS))
	row("invalidation lag p99 (ms)", f(r.InvalidationLagP99ms), "")
	row("invalidation throughput (rows/s)", f(r.InvalidationRowsS), "one large UPDATE")
	row("invalidation backlog (rows/s)", f(r.InvalidationBacklogRowsS), fmt.Sprintf("%d transactions of %d rows, worker started after", backlogTxs, rows/backlogTxs))
	row("stampede DB queries", r.StampedeDBQueries, "1000 concurrent misses of one key, 4 instances")
	row("two raw GETs p50 (µs)", f(r.TwoRawGetsP50us), "baseline of a unique lookup, 1 goroutine")
	row("unique lookup hit p50 (µs)", f(r.UniqueHitP50us), fmt.Sprintf("%.2f× two raw GETs", r.UniqueHitRatio))
	row("list of 20, hit p50 (µs)", f(r.ListHit20P50us), fmt.Sprintf("GORM Where(order_id).Find: %.1f", r.GormFindListP50us))
	row("list of 20 hits/s, 16 goroutines", f(r.ListHit20OpsS16), fmt.Sprintf("%.2f× GORM Find (%.1f/s)", r.ListHitVsFindOpsRatio16, r.GormFindListOpsS16))
	row("list of 20, near hit p50 (µs)", f(r.ListHit20NearP50us), "with ModelOptions.Near")
	row("list of 20 near hits/s, 16 goroutines", f(r.ListHit20NearOpsS16), fmt.Sprintf("%.1f× GORM Find", r.ListHitNearVsFindOpsRatio16))
	row("near hit p50 (ns)", f(r.NearHitP50ns), "in process, 1 goroutine")
	row("near hit ops/s, 16 goroutines", f(r.NearHitOpsS16), fmt.Sprintf("%.1f× the Redis-tier hit", r.NearHitRatioToRedis))
	row("allocations per near hit", f(r.NearAllocsPerHit), "")
	row("near invalidation p50 (ms)", fmt.Sprintf("%.3f", r.NearInvalidationP50ms), "Redis DEL sent → near tier told")
	row("near invalidation p99 (ms)", fmt.Sprintf("%.3f", r.NearInvalidationP99ms), "")
	stale := func(p50, p99 float64) string { return fmt.Sprintf("%.3f / %.3f", p50, p99) }
	row("near stale p50 / p99 (ms)", stale(r.NearStaleP50ms, r.NearStaleP99ms), "another client's DEL → a Get not answered in process")
	row("go-redis/cache local hit p50 (ns)", f(r.GoRedisCacheHitP50ns), "TinyLFU, same row bytes, 1 goroutine")
	row("go-redis/cache hits/s, 16 gor.", f(r.GoRedisCacheHitOpsS16), fmt.Sprintf("%.1f allocations per hit", r.GoRedisCacheAllocsPerHit))
	row("go-redis/cache stale p50 / p99 (ms)", stale(r.GoRedisCacheStaleP50ms, r.GoRedisCacheStaleP99ms), fmt.Sprintf("until its local TTL (%v)", localTTL))
	row("rueidis DoCache hit p50 (ns)", f(r.RueidisHitP50ns), "client-side cache, same row bytes, 1 goroutine")
	row("rueidis hits/s, 16 goroutines", f(r.RueidisHitOpsS16), fmt.Sprintf("%.1f allocations per hit", r.RueidisAllocsPerHit))
	row("rueidis stale p50 / p99 (ms)", stale(r.RueidisStaleP50ms, r.RueidisStaleP99ms), "until Redis' invalidation arrives")
	opt := func(p *float64) string {
		if p == nil {
			return "not measured"
		}
		return f(*p)
	}
	row("write-back Save p50 (µs)", opt(r.WritebackSaveP50us), "")
	row("write-back flush (rows/s)", opt(r.WritebackFlushRowsPerS), "")
	row("Varnish purge p50 (ms)", opt(r.VarnishPurgeP50ms), "PURGE by tag sent → Varnish serving the new body (off: -varnish=false)")
	row("Varnish purge p99 (ms)", opt(r.VarnishPurgeP99ms), "")
	row("Varnish commit → served p50 (ms)", opt(r.VarnishCommitToServedP50ms), "UPDATE committed → Varnish serving the new body, middleware + worker purger")
	row("Varnish commit → served p99 (ms)", opt(r.VarnishCommitToServedP99ms), "")
	row("HTTP cache hit p50 (µs)", opt(r.HTTPHitP50us), "in process, httpcache serving from Redis (1 round trip)")
	row("HTTP uncached p50 (µs)", opt(r.HTTPUncachedP50us), "the same handler without httpcache (1 read-through hit)")
	row("HTTP 304 p50 (µs)", opt(r.HTTP304P50us), "If-None-Match answered by httpcache")
}

// plot writes simple bar charts as SVG; no plotting library needed for bars.
func (r *results) plot(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	charts := map[string]string{
		"latency.svg": bars("p50 latency, 1 goroutine (µs, lower is better)", []bar{
			{"raw GET", r.RawRedisGetP50us}, {"cached hit", r.CachedHitP50us}, {"GORM First", r.GormFirstP50us},
		}),
		"throughput.svg": bars("ops/s with 16 goroutines (higher is better)", []bar{
			{"raw GET", r.RawRedisGetOpsS16}, {"raw GET autopipelined", r.RawRedisGetPipelinedOpsS16}, {"cached hit", r.CachedHitOpsS16}, {"GORM First", r.GormFirstOpsS16},
		}),
		"invalidation-lag.svg": bars(fmt.Sprintf("commit → key deleted at %.0f commits/s (ms)", r.InvalidationCommitsS), lagBars(r.lagHistogram)),
	}
	for name, svg := range charts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(svg), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func lagBars(lags []time.Duration) []bar {
	if len(lags) == 0 {
		return nil
	}
	s := slices.Clone(lags)
	slices.Sort(s)
	var out []bar
	for _, p := range []float64{50, 90, 99, 99.9, 100} {
		out = append(out, bar{fmt.Sprintf("p%g", p), ms(percentile(s, p))})
	}
	return out
}

type bar struct {
	label string
	value float64
}

func bars(title string, bs []bar) string {
	const w, left, top, barH, gap = 640, 110, 40, 28, 12
	height := top + len(bs)*(barH+gap) + 20
	maxV := 0.0
	for _, b := range bs {
		maxV = max(maxV, b.value)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="13">`+"\n", w, height)
	fmt.Fprintf(&sb, `<rect width="100%%" height="100%%" fill="white"/><text x="10" y="24" font-weight="bold">%s</text>`+"\n", title)
	for i, b := range bs {
		y := top + i*(barH+gap)
		bw := 0.0
		if maxV > 0 {
			bw = b.value / maxV * float64(w-left-120)
		}
		fmt.Fprintf(&sb, `<text x="10" y="%d">%s</text>`, y+barH/2+5, b.label)
		fmt.Fprintf(&sb, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="#4a7fb0"/>`, left, y, bw, barH)
		fmt.Fprintf(&sb, `<text x="%.1f" y="%d">%.4g</text>`+"\n", float64(left)+bw+6, y+barH/2+5, b.value)
	}
	sb.WriteString("</svg>\n")
	return sb.String()
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(sorted)-1))
	return sorted[i]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
