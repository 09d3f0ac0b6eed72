package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgcache/pgcache/httpcache/varnish"
	"github.com/pgcache/pgcache/integration"
)

// varnishPurges is how many purges the Varnish section times.
const varnishPurges = 300

// front is an HTTP server of the benchmark's with a Varnish of the harness's in front
// (deploy/varnish/pgcache.vcl, a container in the host's network) and a purger of
// that Varnish: the setup both Varnish measurements share.
type front struct {
	url    string // Varnish's base URL
	purger *varnish.Purger
	close  func()
}

// startFront serves h on a loopback port and starts a Varnish in front of it. close
// stops both.
func startFront(ctx context.Context, h http.Handler) (*front, error) {
	srv := httptest.NewServer(h)
	v, err := integration.StartVarnish(ctx, integration.VarnishOptions{Backend: strings.TrimPrefix(srv.URL, "http://")})
	if err != nil {
		srv.Close()
		return nil, err
	}
	closeAll := func() { _ = v.Close(context.WithoutCancel(ctx)); srv.Close() }
	p, err := varnish.NewPurger(varnish.Options{URLs: []string{v.PurgeURL()}})
	if err != nil {
		closeAll()
		return nil, err
	}
	return &front{url: v.URL(), purger: p, close: closeAll}, nil
}

// varnishBench measures, with a Varnish in front of a plain Go backend, how long after
// a purge by tag is sent Varnish serves the backend's new body: purger.Purge, then GETs
// until the new body comes back.
func (b *bench) varnishBench(ctx context.Context, r *results) error {
	b.log.Info("varnish purge latency")
	origin := &versioned{version: map[string]int{}}
	f, err := startFront(ctx, origin)
	if err != nil {
		return err
	}
	defer f.close()
	lat, err := purgeLatencies(ctx, origin, f.url, f.purger, varnishPurges)
	if err != nil {
		return err
	}
	p50, p99 := ms(percentile(lat, 50)), ms(percentile(lat, 99))
	r.VarnishPurgeP50ms, r.VarnishPurgeP99ms = &p50, &p99
	return nil
}

// purgeLatencies caches n objects of origin in the Varnish at url in turn, makes the
// backend answer each one's next version, purges its tag through p and times the
// purge → the new body served. The latencies come back sorted.
func purgeLatencies(ctx context.Context, origin *versioned, url string, p *varnish.Purger, n int) ([]time.Duration, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	lat := make([]time.Duration, 0, n)
	for i := range n {
		path := "/obj/" + strconv.Itoa(i)
		// Cache the current version, then make the backend answer the next one.
		v := origin.get(path)
		if _, err := untilServed(ctx, client, url+path, objBody(path, v), time.Now()); err != nil {
			return nil, err
		}
		origin.bump(path)
		start := time.Now()
		if err := p.Purge(ctx, []string{"obj." + strconv.Itoa(i)}); err != nil {
			return nil, err
		}
		d, err := untilServed(ctx, client, url+path, objBody(path, v+1), start)
		if err != nil {
			return nil, err
		}
		lat = append(lat, d)
	}
	slices.Sort(lat)
	return lat, nil
}

// untilServed GETs url back to back until the body is want, and returns the time from
// since to the answer that had it: "commit (or purge) → Varnish serving the new body"
// when since is the commit's (or the purge's) time. It gives up when ctx ends.
func untilServed(ctx context.Context, c *http.Client, url string, want []byte, since time.Time) (time.Duration, error) {
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, fmt.Errorf("varnish: GET %s: %w", url, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, fmt.Errorf("varnish: GET %s: %w", url, err)
		}
		if resp.StatusCode == http.StatusOK && bytes.Equal(got, want) {
			return time.Since(since), nil
		}
		last = fmt.Sprintf("%d %q", resp.StatusCode, got)
		if ctx.Err() != nil {
			return 0, fmt.Errorf("varnish: %s never served %q (last answer %s): %w", url, want, last, ctx.Err())
		}
	}
}

// versioned is the Varnish section's backend: each path answers its version, tagged
// "obj.<last path element>", cacheable for an hour.
type versioned struct {
	mu      sync.Mutex
	version map[string]int
}

func (o *versioned) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	v := o.version[r.URL.Path]
	o.mu.Unlock()
	w.Header().Set("Cache-Control", "public, s-maxage=3600")
	w.Header().Set("xkey", "obj."+r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:])
	_, _ = w.Write(objBody(r.URL.Path, v))
}

func objBody(path string, v int) []byte { return fmt.Appendf(nil, "%s v%d", path, v) }

func (o *versioned) get(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.version[path]
}

func (o *versioned) bump(path string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.version[path]++
}
