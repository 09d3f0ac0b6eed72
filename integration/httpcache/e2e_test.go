package httpcache_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgcache/pgcache/httpcache"
	"github.com/pgcache/pgcache/httpcache/varnish"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/invalidator"
)

// TestVarnishEndToEnd: the whole chain of issue 18. A Go API behind the response cache
// (tags in xkey, s-maxage an hour) with a real Varnish in front, and the invalidator
// worker purging that Varnish (varnish.NewPurger). The second GET through Varnish does
// not reach the API; a raw SQL UPDATE of the row makes Varnish serve the new body.
// The control runs the same chain without the purger: the API itself serves the new
// body (the worker invalidated Redis) while Varnish keeps serving the old one, so the
// test fails if the purge does not reach Varnish.
func TestVarnishEndToEnd(t *testing.T) {
	t.Parallel()
	for _, purge := range []bool{true, false} {
		name := "purger"
		if !purge {
			name = "control-no-purger"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			c := e.cache(t, httpcache.Options{TagHeader: "xkey"})
			h := wrap(t, c, httpcache.Route{SMaxAge: time.Hour}, e.api())
			var backendHits atomic.Int64
			api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				backendHits.Add(1)
				h.ServeHTTP(w, r)
			}))
			t.Cleanup(api.Close)
			v := integration.NewVarnish(t, integration.VarnishOptions{Backend: strings.TrimPrefix(api.URL, "http://")})

			var opts invalidator.Options
			if purge {
				p, err := varnish.NewPurger(varnish.Options{URLs: []string{v.PurgeURL()}})
				if err != nil {
					t.Fatal(err)
				}
				opts.Purger = p
			}
			w := e.startWorker(t, opts)

			const path = "/authors/1"
			first := httpGet(t, v.URL()+path)
			if first.status != http.StatusOK || !strings.Contains(first.body, `"ada"`) {
				t.Fatalf("first GET through Varnish = %d %q, want 200 with ada", first.status, first.body)
			}
			if tags := first.header.Get("xkey"); tags != "" {
				t.Errorf("Varnish passed the xkey tags %q on to the client; the VCL should keep them", tags)
			}
			hits := backendHits.Load()
			second := httpGet(t, v.URL()+path)
			if second.body != first.body {
				t.Fatalf("second GET through Varnish = %q, want %q", second.body, first.body)
			}
			if n := backendHits.Load(); n != hits {
				t.Fatalf("second GET reached the API (%d requests, was %d): Varnish did not serve it", n, hits)
			}

			e.exec(t, `UPDATE authors SET name = 'ada-e2e' WHERE id = 1`)
			if purge {
				waitServed(t, v.URL()+path, `"ada-e2e"`)
				if s := w.Stats(); s.Purged == 0 || s.PurgeErrors != 0 {
					t.Errorf("worker stats %+v: want tags purged, no purge errors", s)
				}
				return
			}
			// The control: the API serves the new body once the worker invalidated
			// Redis, yet Varnish, not purged, still serves the old one.
			waitServed(t, api.URL+path, `"ada-e2e"`)
			if got := httpGet(t, v.URL()+path); got.body != first.body {
				t.Fatalf("without the purger Varnish served %q, want the old body %q until s-maxage", got.body, first.body)
			}
			if s := w.Stats(); s.Purged != 0 {
				t.Errorf("worker stats %+v: no purger, yet tags purged", s)
			}
		})
	}
}

type httpAnswer struct {
	status int
	body   string
	header http.Header
}

// httpGet GETs url over the network, within a minute.
func httpGet(t testing.TB, url string) httpAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return httpAnswer{status: resp.StatusCode, body: string(b), header: resp.Header}
}

// waitServed GETs url until its body contains want, for up to a minute (a loaded
// machine is slow, not wrong).
func waitServed(t testing.TB, url, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		a := httpGet(t, url)
		if a.status == http.StatusOK && strings.Contains(a.body, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s", fmt.Sprintf("GET %s = %d %q after a minute, want 200 with %s", url, a.status, a.body, want))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
