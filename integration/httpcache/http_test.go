package httpcache_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgcache/pgcache/httpcache"
)

var bg = context.Background()

// TestHit: the second GET of a URL is served from Redis without calling the handler,
// with the same body, an ETag, Cache-Control, Age and the rows' tags; HEAD has its own
// entry and no body.
func TestHit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.cache(t, httpcache.Options{})
	h := wrap(t, c, httpcache.Route{SMaxAge: time.Minute, StaleWhileRevalidate: 30 * time.Second}, e.api())
	first := get(bg, h, "/authors/1")
	second := get(bg, h, "/authors/1")
	if first.Code != 200 || second.Code != 200 || first.Body.String() != second.Body.String() || !strings.Contains(second.Body.String(), "ada") {
		t.Fatalf("responses %d %q, %d %q", first.Code, first.Body, second.Code, second.Body)
	}
	if n := e.rendered("author"); n != 1 {
		t.Errorf("handler called %d times, want 1", n)
	}
	if got := first.Header().Get("X-Cache") + "," + second.Header().Get("X-Cache"); got != "MISS,HIT" {
		t.Errorf("X-Cache %s, want MISS,HIT", got)
	}
	etag := second.Header().Get("Etag")
	if etag == "" || strings.HasPrefix(etag, "W/") || etag != first.Header().Get("Etag") {
		t.Errorf("ETags %q, %q: want one strong ETag", first.Header().Get("Etag"), etag)
	}
	if cc := second.Header().Get("Cache-Control"); cc != "public, max-age=0, s-maxage=60, stale-while-revalidate=30" {
		t.Errorf("Cache-Control %q", cc)
	}
	if second.Header().Get("Age") == "" {
		t.Error("no Age on a hit")
	}
	if tags := strings.Fields(second.Header().Get("Surrogate-Key")); !slices.Equal(tags, e.authorTags(t, 1)) {
		t.Errorf("Surrogate-Key %q: want the row's and the table's tag %q", tags, e.authorTags(t, 1))
	}
	head := do(bg, h, http.MethodHead, "/authors/1")
	head2 := do(bg, h, http.MethodHead, "/authors/1")
	if head.Body.Len() != 0 || head2.Body.Len() != 0 || head2.Header().Get("X-Cache") != "HIT" || head2.Code != 200 {
		t.Errorf("HEAD: %d %q %s", head2.Code, head2.Body, head2.Header().Get("X-Cache"))
	}
	if s := c.Stats(); s.Hits != 2 || s.Stored != 2 {
		t.Errorf("stats %+v: want 2 hits, 2 stored", s)
	}
}

// TestRouteOff: a route with caching off calls the handler every time and adds nothing.
func TestRouteOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	h := wrap(t, e.cache(t, httpcache.Options{}), httpcache.Route{Off: true}, e.api())
	for range 3 {
		if w := get(bg, h, "/authors/1"); w.Header().Get("X-Cache") != "" || w.Header().Get("Etag") != "" {
			t.Errorf("route off: headers %v", w.Header())
		}
	}
	if n := e.rendered("author"); n != 3 {
		t.Errorf("handler called %d times, want 3", n)
	}
}

// echo is a handler that shows what it was asked, counting its calls.
func echo(calls *atomic.Int64, extra func(w http.ResponseWriter, r *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if extra != nil {
			extra(w, r)
		}
		var b strings.Builder
		b.WriteString("host=" + r.Host + " path=" + r.URL.EscapedPath())
		for _, k := range []string{"a", "b"} {
			b.WriteString(" " + k + "=" + strings.Join(r.URL.Query()[k], ","))
		}
		for _, k := range []string{"Accept-Language", "Authorization", "Cookie"} {
			b.WriteString(" " + k + "=" + strings.Join(r.Header.Values(k), "|"))
		}
		_, _ = w.Write([]byte(b.String()))
	})
}

// TestVary: a route varying on Accept-Language keeps one entry per value, says so in
// Vary, and a response that varies on a header the route does not is not stored.
func TestVary(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.cache(t, httpcache.Options{})
	var calls atomic.Int64
	h := wrap(t, c, httpcache.Route{Vary: []string{"accept-language"}}, echo(&calls, nil))
	for range 2 {
		for _, lang := range []string{"en", "fr", "EN", ""} {
			w := get(bg, h, "/x", "Accept-Language", lang)
			if !strings.Contains(w.Body.String(), "Accept-Language="+lang+" ") {
				t.Errorf("Accept-Language %q answered %q", lang, w.Body)
			}
			if w.Header().Get("Vary") != "Accept-Language" {
				t.Errorf("Vary %q", w.Header().Get("Vary"))
			}
		}
	}
	if n := calls.Load(); n != 4 {
		t.Errorf("handler called %d times for 4 values twice, want 4", n)
	}
	var calls2 atomic.Int64
	h2 := wrap(t, c, httpcache.Route{}, echo(&calls2, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Vary", "Accept-Encoding")
	}))
	get(bg, h2, "/y")
	get(bg, h2, "/y")
	if n := calls2.Load(); n != 2 {
		t.Errorf("a response varying on an undeclared header was served from the cache (%d calls)", n)
	}
}

// TestConditional: If-None-Match with the ETag is answered 304 without rendering and
// without a body; another ETag gets the body; If-Modified-Since is honoured when the
// handler set Last-Modified.
func TestConditional(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.cache(t, httpcache.Options{})
	lm := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var calls atomic.Int64
	h := wrap(t, c, httpcache.Route{}, echo(&calls, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Last-Modified", lm.Format(http.TimeFormat))
	}))
	first := get(bg, h, "/x")
	etag := first.Header().Get("Etag")
	for _, inm := range []string{etag, `"other", ` + etag, "W/" + etag, "*"} {
		w := get(bg, h, "/x", "If-None-Match", inm)
		if w.Code != http.StatusNotModified || w.Body.Len() != 0 || w.Header().Get("Etag") != etag {
			t.Errorf("If-None-Match %s: %d, body %q, ETag %q", inm, w.Code, w.Body, w.Header().Get("Etag"))
		}
	}
	if w := get(bg, h, "/x", "If-None-Match", `"other"`); w.Code != 200 || w.Body.String() != first.Body.String() {
		t.Errorf("If-None-Match other: %d %q", w.Code, w.Body)
	}
	if w := get(bg, h, "/x", "If-Modified-Since", lm.Format(http.TimeFormat)); w.Code != http.StatusNotModified {
		t.Errorf("If-Modified-Since = Last-Modified: %d", w.Code)
	}
	if w := get(bg, h, "/x", "If-Modified-Since", lm.Add(-time.Hour).Format(http.TimeFormat)); w.Code != 200 {
		t.Errorf("If-Modified-Since before Last-Modified: %d", w.Code)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("handler called %d times, want 1", n)
	}
	if s := c.Stats(); s.NotModified != 5 {
		t.Errorf("stats %+v: want 5 not modified", s)
	}
}

// TestNotStored: responses with Set-Cookie, Cache-Control private, no-store or
// no-cache, an error status, or a body over MaxBody are rendered every time; 404 is
// stored unless Statuses says otherwise.
func TestNotStored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.cache(t, httpcache.Options{MaxBody: 1000})
	cases := map[string]func(w http.ResponseWriter, r *http.Request){
		"set-cookie": func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("Set-Cookie", "session=secret") },
		"private":    func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("Cache-Control", "private, max-age=60") },
		"no-store":   func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("Cache-Control", "No-Store") },
		"no-cache":   func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("Cache-Control", "no-cache") },
		"500":        func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) },
		"302":        func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("Location", "/"); w.WriteHeader(302) },
		"huge":       func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(make([]byte, 5000)) },
	}
	for name, f := range cases {
		var calls atomic.Int64
		h := wrap(t, c, httpcache.Route{}, echo(&calls, f))
		for range 3 {
			if w := get(bg, h, "/"+name); w.Header().Get("X-Cache") == "HIT" {
				t.Errorf("%s: served from the cache", name)
			}
		}
		if n := calls.Load(); n != 3 {
			t.Errorf("%s: handler called %d times, want 3", name, n)
		}
	}
	var calls atomic.Int64
	notFound := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(404) }
	get(bg, wrap(t, c, httpcache.Route{}, echo(&calls, notFound)), "/404")
	get(bg, wrap(t, c, httpcache.Route{}, echo(&calls, notFound)), "/404")
	only200 := e.cache(t, httpcache.Options{Statuses: []int{200}})
	get(bg, wrap(t, only200, httpcache.Route{}, echo(&calls, notFound)), "/404b")
	get(bg, wrap(t, only200, httpcache.Route{}, echo(&calls, notFound)), "/404b")
	if n := calls.Load(); n != 3 {
		t.Errorf("404s: handler called %d times, want 3 (stored by default, not with Statuses 200)", n)
	}
}

// TestCredentials: requests with Authorization or Cookie are neither served from nor
// stored in a route's cache unless it varies on them; when it does, each user has
// their own entry, marked private; no user ever sees another's response.
func TestCredentials(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.cache(t, httpcache.Options{})
	var calls atomic.Int64
	shared := wrap(t, c, httpcache.Route{SMaxAge: time.Minute}, echo(&calls, nil))
	get(bg, shared, "/me") // an anonymous entry exists
	for _, creds := range [][]string{{"Authorization", "Bearer alice"}, {"Cookie", "session=alice"}} {
		for range 2 {
			w := get(bg, shared, "/me", creds...)
			if !strings.Contains(w.Body.String(), creds[1]) || w.Header().Get("X-Cache") == "HIT" {
				t.Errorf("%s: answered %q (%s)", creds[0], w.Body, w.Header().Get("X-Cache"))
			}
		}
	}
	if w := get(bg, shared, "/me"); strings.Contains(w.Body.String(), "alice") {
		t.Errorf("anonymous request got alice's response %q", w.Body)
	}
	if n := calls.Load(); n != 5 {
		t.Errorf("handler called %d times, want 5 (1 anonymous + 4 with credentials)", n)
	}

	var calls2 atomic.Int64
	perUser := wrap(t, c, httpcache.Route{Vary: []string{"Authorization"}, SMaxAge: time.Minute}, echo(&calls2, nil))
	for range 2 {
		for _, user := range []string{"alice", "bob", "ALICE", "alice "} {
			w := get(bg, perUser, "/me", "Authorization", "Bearer "+user)
			if !strings.Contains(w.Body.String(), "Authorization=Bearer "+user+" ") {
				t.Errorf("user %q got %q", user, w.Body)
			}
			if cc := w.Header().Get("Cache-Control"); !strings.HasPrefix(cc, "private") || strings.Contains(cc, "s-maxage") {
				t.Errorf("per-user response with Cache-Control %q", cc)
			}
		}
		if w := get(bg, perUser, "/me"); strings.Contains(w.Body.String(), "Bearer") {
			t.Errorf("anonymous request got %q", w.Body)
		}
	}
	if n := calls2.Load(); n != 5 {
		t.Errorf("handler called %d times, want 5 (4 users + anonymous, once each)", n)
	}
}

// TestStampede: twenty concurrent requests for one uncached response, through two
// caches (two processes), render it once; the control, with waiting off, renders it
// for every request.
func TestStampede(t *testing.T) {
	t.Parallel()
	for _, control := range []bool{false, true} {
		e := newEnv(t)
		opts := httpcache.Options{Wait: 30 * time.Second, Lease: 30 * time.Second}
		if control {
			opts.Wait = -1
		}
		c1, c2 := e.cache(t, opts), e.cache(t, opts)
		var calls atomic.Int64
		release := make(chan struct{})
		slow := echo(&calls, func(http.ResponseWriter, *http.Request) { <-release })
		hs := []http.Handler{wrap(t, c1, httpcache.Route{}, slow), wrap(t, c2, httpcache.Route{}, slow)}
		const n = 20
		var wg sync.WaitGroup
		bodies := make([]string, n)
		for i := range n {
			wg.Go(func() { bodies[i] = get(bg, hs[i%2], "/slow?a=1").Body.String() })
		}
		waitFor(t, "every request to miss", func() bool { return c1.Stats().Misses+c2.Stats().Misses == n })
		if control {
			waitFor(t, "every request to render", func() bool { return calls.Load() == n })
		}
		close(release)
		wg.Wait()
		for i, b := range bodies {
			if b != bodies[0] || !strings.Contains(b, "a=1") {
				t.Errorf("response %d: %q", i, b)
			}
		}
		want := int64(1)
		if control {
			want = n
		}
		if got := calls.Load(); got != want {
			t.Errorf("control %v: handler called %d times, want %d", control, got, want)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
