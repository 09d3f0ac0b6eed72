package varnish_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// origin is the backend Varnish fronts in these tests: a Go HTTP server of the test
// process that serves, for each path, a body with the path's version, the path's tags in
// the xkey header and a Cache-Control of the test's choosing, and counts the requests it
// gets per path.
type origin struct {
	srv *httptest.Server

	mu      sync.Mutex
	version map[string]int
	tags    map[string]string
	cc      map[string]string
	hits    map[string]int
	// hold, when not nil, makes requests wait for it to close before answering.
	hold chan struct{}
	// fetched is signalled (without blocking) on each request.
	fetched chan string
}

const longLived = "public, s-maxage=3600"

func newOrigin(t *testing.T) *origin {
	t.Helper()
	o := &origin{version: map[string]int{}, tags: map[string]string{}, cc: map[string]string{},
		hits: map[string]int{}, fetched: make(chan string, 1024)}
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *origin) serve(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	o.hits[r.URL.Path]++
	hold := o.hold
	o.mu.Unlock()
	select {
	case o.fetched <- r.URL.Path:
	default:
	}
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	o.mu.Lock()
	v, tags, cc := o.version[r.URL.Path], o.tags[r.URL.Path], o.cc[r.URL.Path]
	o.mu.Unlock()
	if cc == "" {
		cc = longLived
	}
	w.Header().Set("Cache-Control", cc)
	if tags != "" {
		w.Header().Set("xkey", tags)
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%s v%d", r.URL.Path, v)
}

// set makes path answer with version v, these tags (space-separated) and this
// Cache-Control (empty: longLived).
func (o *origin) set(path string, v int, tags, cacheControl string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.version[path], o.tags[path], o.cc[path] = v, tags, cacheControl
}

// bump makes every path answer with its next version.
func (o *origin) bump() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for p := range o.version {
		o.version[p]++
	}
}

func (o *origin) hitsOf(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hits[path]
}

// addr is the backend's host:port, which Varnish reaches (it shares this machine's
// network).
func (o *origin) addr() string { return strings.TrimPrefix(o.srv.URL, "http://") }

func body(path string, v int) string { return fmt.Sprintf("%s v%d", path, v) }

type answer struct {
	status int
	body   string
	header http.Header
}

func get(t testing.TB, url string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func purge(t testing.TB, url, header, tags string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "PURGE", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if header != "" {
		req.Header.Set(header, tags)
	}
	return do(t, req)
}

func do(t testing.TB, req *http.Request) answer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return answer{status: resp.StatusCode, body: string(b), header: resp.Header}
}

// wantBody fails the test unless a GET of base+path answers 200 with want.
func wantBody(t testing.TB, base, path, want string) {
	t.Helper()
	a := get(t, base+path)
	if a.status != http.StatusOK || a.body != want {
		t.Fatalf("GET %s%s = %d %q, want 200 %q", base, path, a.status, a.body, want)
	}
}

// holdFetches makes the backend hold every request until the returned release is
// called (which the test's cleanup also does).
func (o *origin) holdFetches(t *testing.T) (release func()) {
	t.Helper()
	hold := make(chan struct{})
	var once sync.Once
	release = func() {
		once.Do(func() {
			o.mu.Lock()
			o.hold = nil
			o.mu.Unlock()
			close(hold)
		})
	}
	t.Cleanup(release)
	o.mu.Lock()
	o.hold = hold
	o.mu.Unlock()
	for len(o.fetched) > 0 {
		<-o.fetched
	}
	return release
}

// getUntilRefetch GETs base+path again and again, every answer so far being want,
// until a GET makes Varnish fetch path from the backend (which holds it: see
// holdFetches). It returns the channel on which that GET's answer comes.
func getUntilRefetch(t *testing.T, o *origin, base, path, want string) <-chan answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		ch := make(chan answer, 1)
		go func() {
			req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, base+path, nil)
			if err != nil {
				ch <- answer{body: err.Error()}
				return
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				ch <- answer{body: err.Error()}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			ch <- answer{status: resp.StatusCode, body: string(b), header: resp.Header}
		}()
	wait:
		select {
		case a := <-ch:
			if a.status != http.StatusOK || a.body != want {
				t.Fatalf("GET %s%s = %d %q before Varnish refetched it, want 200 %q", base, path, a.status, a.body, want)
			}
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				t.Fatalf("Varnish did not refetch %s within a minute", path)
			}
		case p := <-o.fetched:
			if p != path {
				goto wait
			}
			return ch
		case <-ctx.Done():
			t.Fatalf("Varnish did not refetch %s within a minute", path)
		}
	}
}

// waitBody GETs base+path until it answers want, for up to a minute.
func waitBody(t testing.TB, base, path, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		a := get(t, base+path)
		if a.status == http.StatusOK && a.body == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s%s = %d %q after a minute, want 200 %q", base, path, a.status, a.body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
