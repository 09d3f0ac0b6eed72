package httpcache_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/pgcache/pgcache/httpcache"
)

// benchResponses serves GET /authors/1 through h b.N times (with headers), checking
// the status, and reports the median latency.
func benchResponses(b *testing.B, h http.Handler, status int, headers ...string) {
	b.Helper()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		w := get(bg, h, "/authors/1", headers...)
		lat = append(lat, time.Since(t0))
		if w.Code != status {
			b.Fatalf("status %d, want %d", w.Code, status)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkResponseUncached is the handler alone: a cached row read from Redis through
// the repository, encoded as JSON.
func BenchmarkResponseUncached(b *testing.B) {
	e := newEnv(b)
	h := e.api()
	get(bg, h, "/authors/1")
	benchResponses(b, h, 200)
}

// BenchmarkResponseHit is a cached response: its entry and its dependencies' epochs
// read in one round trip (a script checking the epochs; two on a Cluster).
func BenchmarkResponseHit(b *testing.B) {
	e := newEnv(b)
	h := wrap(b, e.cache(b, httpcache.Options{TTL: time.Hour}), httpcache.Route{}, e.api())
	get(bg, h, "/authors/1")
	benchResponses(b, h, 200)
}

// BenchmarkResponse304 is a conditional GET answered 304 from the cache.
func BenchmarkResponse304(b *testing.B) {
	e := newEnv(b)
	h := wrap(b, e.cache(b, httpcache.Options{TTL: time.Hour}), httpcache.Route{}, e.api())
	etag := get(bg, h, "/authors/1").Header().Get("Etag")
	benchResponses(b, h, http.StatusNotModified, "If-None-Match", etag)
}

// BenchmarkResponseRender is a miss: the handler runs with its reads registered, and
// the response is stored (each iteration's row change drops the previous one).
func BenchmarkResponseRender(b *testing.B) {
	e := newEnv(b)
	h := wrap(b, e.cache(b, httpcache.Options{TTL: time.Hour}), httpcache.Route{}, e.api())
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := e.authors.Invalidate(bg, int64(1)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		if w := get(bg, h, "/authors/1"); w.Code != 200 || w.Header().Get("X-Cache") != "MISS" {
			b.Fatalf("%d %s", w.Code, w.Header().Get("X-Cache"))
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
}
