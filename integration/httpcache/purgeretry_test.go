package httpcache_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgcache/pgcache/httpcache"
	"github.com/pgcache/pgcache/httpcache/varnish"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/keys"
)

// edge is the HTTP edge of issue 18 under test: the API behind the response cache
// (tags in xkey, s-maxage an hour), a real Varnish in front, and a purger of that
// Varnish that the test can make fail (a CDN unreachable from the worker, while
// Varnish itself keeps its objects) and that records what it purged.
type edge struct {
	*env
	api     *httptest.Server
	varnish *integration.Varnish
	purger  *switchPurger
	// hold, when set, is called by the API after rendering a response and before
	// sending it, once (it is cleared then).
	hold atomic.Pointer[func()]
	// hits counts requests that reached the API.
	hits atomic.Int64
}

func newEdge(t *testing.T) *edge {
	t.Helper()
	x := &edge{env: newEnv(t)}
	h := wrap(t, x.cache(t, httpcache.Options{TagHeader: "xkey"}), httpcache.Route{SMaxAge: time.Hour}, x.env.api())
	x.api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x.hits.Add(1)
		hold := x.hold.Swap(nil)
		if hold == nil {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		(*hold)() // the response is rendered (and its rows checked), not yet sent
		for k, vs := range rec.Header() {
			w.Header()[k] = vs
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(x.api.Close)
	x.varnish = integration.NewVarnish(t, integration.VarnishOptions{Backend: strings.TrimPrefix(x.api.URL, "http://")})
	p, err := varnish.NewPurger(varnish.Options{URLs: []string{x.varnish.PurgeURL()}})
	if err != nil {
		t.Fatal(err)
	}
	x.purger = &switchPurger{next: p}
	return x
}

// cached GETs path through Varnish twice and checks the second answer came from
// Varnish's cache with want in it.
func (x *edge) cached(t *testing.T, path, want string) {
	t.Helper()
	if a := httpGet(t, x.varnish.URL()+path); !strings.Contains(a.body, want) {
		t.Fatalf("GET %s through Varnish = %d %q, want %s", path, a.status, a.body, want)
	}
	hits := x.hits.Load()
	if a := httpGet(t, x.varnish.URL()+path); !strings.Contains(a.body, want) || x.hits.Load() != hits {
		t.Fatalf("second GET %s through Varnish = %q (API requests %d, were %d), want %s from Varnish's cache", path, a.body, x.hits.Load(), hits, want)
	}
}

// rowTag returns the tag of author id's row.
func (x *edge) rowTag(t *testing.T, id int64) string {
	t.Helper()
	v, err := x.authors.Key(id)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := keys.KeyOfValue(v)
	return k.Tag()
}

// acknowledged waits until the worker's slot confirmed every change committed so far:
// the worker acknowledged them.
func (x *edge) acknowledged(t *testing.T) {
	t.Helper()
	var lsn string
	if err := x.db.Raw(`SELECT pg_current_wal_lsn()::text`).Scan(&lsn).Error; err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "the worker to acknowledge the change", func() bool {
		var ok bool
		err := x.db.Raw(`SELECT coalesce(confirmed_flush_lsn >= ?::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = ?`,
			lsn, "s_"+x.pg.Name).Scan(&ok).Error
		return err == nil && ok
	})
}

// switchPurger passes purges to next, or fails them while down, and records the tags
// it passed.
type switchPurger struct {
	next invalidator.Purger
	down atomic.Bool
	// before, if set (before the worker starts), runs before each purge is passed on.
	before func(tags []string)
	mu     sync.Mutex
	tags   []string
}

func (p *switchPurger) Purge(ctx context.Context, tags []string) error {
	if p.down.Load() {
		return errors.New("test: the CDN is unreachable")
	}
	if p.before != nil {
		p.before(tags)
	}
	if err := p.next.Purge(ctx, tags); err != nil {
		return err
	}
	p.mu.Lock()
	p.tags = append(p.tags, tags...)
	p.mu.Unlock()
	return nil
}

// times returns how many times tag was purged.
func (p *switchPurger) times(tag string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, t := range p.tags {
		if t == tag {
			n++
		}
	}
	return n
}

// TestPurgeAtLeastOnce: the CDN is unreachable from the worker when a raw SQL UPDATE
// of a row is invalidated. The worker acknowledges the change all the same (the purge
// holds it at most PurgeTimeout), keeps the tags in the purge stream, and is
// restarted with the purge pending; once the CDN is reachable again, the purge
// arrives and Varnish serves the new body. The control, with the purge stream off
// (testhooks.Purge.Undurable, purges best effort as before), loses the purge: after
// the same steps, and a later change of another row purged fine, Varnish still serves
// the old body. Second purges are off in both, so that they cannot stand in for the
// retry.
func TestPurgeAtLeastOnce(t *testing.T) {
	t.Parallel()
	for _, durable := range []bool{true, false} {
		t.Run(map[bool]string{true: "durable", false: "control-undurable"}[durable], func(t *testing.T) {
			t.Parallel()
			x := newEdge(t)
			ctx := testhooks.WithPurge(context.Background(), &testhooks.Purge{Undurable: !durable})
			opts := invalidator.Options{Purger: x.purger, PurgeTimeout: 300 * time.Millisecond, RepurgeAfter: -1}
			w, stop := x.runWorker(t, ctx, opts)
			x.cached(t, "/authors/1", `"ada"`)
			x.cached(t, "/authors/2", `"bob"`)

			x.purger.down.Store(true)
			x.exec(t, `UPDATE authors SET name = 'ada-new' WHERE id = 1`)
			x.acknowledged(t) // while the CDN is still unreachable
			waitServed(t, x.api.URL+"/authors/1", `"ada-new"`)
			if a := httpGet(t, x.varnish.URL()+"/authors/1"); !strings.Contains(a.body, `"ada"`) {
				t.Fatalf("Varnish served %q before any purge reached it", a.body)
			}
			s := w.Stats()
			if s.PurgeErrors == 0 {
				t.Errorf("stats %+v: want the failed purge counted", s)
			}
			if durable {
				integration.Eventually(t, "the failed purge to be pending", func() bool { return w.Stats().PurgesPending > 0 })
			}
			stop()

			// A new worker, with the purge pending (durable) or lost (control), and
			// the CDN back.
			x.purger.down.Store(false)
			w2, _ := x.runWorker(t, ctx, opts)
			x.exec(t, `UPDATE authors SET name = 'bob-new' WHERE id = 2`)
			waitServed(t, x.varnish.URL()+"/authors/2", `"bob-new"`)
			if durable {
				waitServed(t, x.varnish.URL()+"/authors/1", `"ada-new"`)
				integration.Eventually(t, "the purge stream to be empty", func() bool { return w2.Stats().PurgesPending == 0 })
				return
			}
			if a := httpGet(t, x.varnish.URL()+"/authors/1"); !strings.Contains(a.body, `"ada"`) {
				t.Fatalf("control: Varnish served %q, want the old body: the purge given up on was lost", a.body)
			}
			if n := x.purger.times(x.rowTag(t, 1)); n != 0 {
				t.Errorf("control: author 1's tag purged %d times, want 0", n)
			}
		})
	}
}

// TestRepurgeInFlight: the CDN in-flight race. A response rendered from the old row
// (its rows checked before the UPDATE) is held on its way to Varnish until the worker
// purged the row's tag; Varnish then caches the old body after the purge. The second
// purge, RepurgeAfter later (held itself until Varnish delivered the old response, so
// that a slow machine cannot send it before the race happened), drops it: Varnish
// serves the new body. The control, without the second purge
// (testhooks.Purge.Unrepeated), keeps serving the old body after a later change of
// another row was purged.
func TestRepurgeInFlight(t *testing.T) {
	t.Parallel()
	for _, repurge := range []bool{true, false} {
		t.Run(map[bool]string{true: "repurge", false: "control-no-repurge"}[repurge], func(t *testing.T) {
			t.Parallel()
			x := newEdge(t)
			tag := x.rowTag(t, 1)
			var seen atomic.Int32
			oldCached := make(chan struct{})
			x.purger.before = func(tags []string) {
				if slices.Contains(tags, tag) && seen.Add(1) > 1 {
					<-oldCached // the second purge waits for the race to have happened
				}
			}
			ctx := testhooks.WithPurge(context.Background(), &testhooks.Purge{Unrepeated: !repurge})
			w, _ := x.runWorker(t, ctx, invalidator.Options{Purger: x.purger, RepurgeAfter: time.Second})
			x.cached(t, "/authors/2", `"bob"`)

			rendered, release := make(chan struct{}), make(chan struct{})
			hold := func() { close(rendered); <-release }
			x.hold.Store(&hold)
			first := make(chan httpAnswer, 1)
			go func() { first <- httpGet(t, x.varnish.URL()+"/authors/1") }()
			<-rendered
			x.exec(t, `UPDATE authors SET name = 'ada-new' WHERE id = 1`)
			integration.Eventually(t, "the first purge of author 1", func() bool { return x.purger.times(tag) >= 1 })
			close(release)
			if a := <-first; !strings.Contains(a.body, `"ada"`) {
				t.Fatalf("the held response = %q, want the old body", a.body)
			}
			if a := httpGet(t, x.varnish.URL()+"/authors/1"); !strings.Contains(a.body, `"ada"`) {
				// Only if Varnish did not cache the held response: the race did not happen.
				t.Fatalf("Varnish served %q after the held old response; want the old body cached (the race)", a.body)
			}
			close(oldCached)
			if repurge {
				waitServed(t, x.varnish.URL()+"/authors/1", `"ada-new"`)
				// Recorded once Varnish answered the purge, which may be after it served.
				integration.Eventually(t, "author 1's tag purged twice", func() bool { return x.purger.times(tag) >= 2 })
				return
			}
			x.exec(t, `UPDATE authors SET name = 'bob-new' WHERE id = 2`)
			waitServed(t, x.varnish.URL()+"/authors/2", `"bob-new"`)
			if a := httpGet(t, x.varnish.URL()+"/authors/1"); !strings.Contains(a.body, `"ada"`) {
				t.Fatalf("control: Varnish served %q, want the old body kept", a.body)
			}
			if n, s := x.purger.times(tag), w.Stats(); n != 1 || s.PurgesPending != 0 {
				t.Errorf("control: author 1's tag purged %d times (want 1), %d purges pending (want 0)", n, s.PurgesPending)
			}
		})
	}
}
