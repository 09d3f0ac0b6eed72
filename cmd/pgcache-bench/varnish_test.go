package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pgcache/pgcache/httpcache/varnish"
	"github.com/pgcache/pgcache/integration"
)

// TestPurgeLatencies: the Varnish section's measurement against a real Varnish: every
// purge ends with the backend's new body served (purgeLatencies fails when one never
// is), and a latency per purge comes back, sorted.
func TestPurgeLatencies(t *testing.T) {
	origin := &versioned{version: map[string]int{}}
	srv := httptest.NewServer(origin)
	defer srv.Close()
	v := integration.NewVarnish(t, integration.VarnishOptions{Backend: strings.TrimPrefix(srv.URL, "http://")})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 20
	p, err := varnish.NewPurger(varnish.Options{URLs: []string{v.PurgeURL()}})
	if err != nil {
		t.Fatal(err)
	}
	lat, err := purgeLatencies(ctx, origin, v.URL(), p, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(lat) != n || lat[0] <= 0 || lat[n-1] < lat[0] {
		t.Fatalf("purgeLatencies = %v, want %d positive latencies, sorted", lat, n)
	}
	t.Logf("purge → new body: p50 %v, p99 %v", percentile(lat, 50), percentile(lat, 99))
}
