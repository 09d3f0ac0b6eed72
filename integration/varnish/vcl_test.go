package varnish_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/pgcache/pgcache/integration"
)

// TestVarnishCachesBackendResponse: a response the backend marks cacheable is fetched
// once and then served from Varnish; the control, a no-store response, is fetched on
// every request, so the backend's counter does see requests that reach it.
func TestVarnishCachesBackendResponse(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.set("/cached", 1, "widgets.1 widgets", "")
	o.set("/private", 1, "widgets.2 widgets", "no-store")
	v := integration.NewVarnish(t, integration.VarnishOptions{Backend: o.addr()})

	first := get(t, v.URL()+"/cached")
	second := get(t, v.URL()+"/cached")
	for i, a := range []answer{first, second} {
		if a.status != http.StatusOK || a.body != body("/cached", 1) {
			t.Fatalf("GET %d of /cached = %d %q, want 200 %q", i+1, a.status, a.body, body("/cached", 1))
		}
		if tags := a.header.Get("xkey"); tags != "" {
			t.Errorf("GET %d of /cached sent the tags to the client: xkey: %s", i+1, tags)
		}
	}
	if n := o.hitsOf("/cached"); n != 1 {
		t.Fatalf("backend got %d requests for /cached (s-maxage=3600) over two GETs, want 1", n)
	}
	if got := second.header.Get("X-Cache"); got != "HIT" {
		t.Errorf("second GET of /cached: X-Cache %q, want HIT", got)
	}

	wantBody(t, v.URL(), "/private", body("/private", 1))
	wantBody(t, v.URL(), "/private", body("/private", 1))
	if n := o.hitsOf("/private"); n != 2 {
		t.Fatalf("backend got %d requests for /private (no-store) over two GETs, want 2", n)
	}
}

// TestVarnishPurgeByTag: a PURGE naming a tag drops exactly the objects carrying it (and
// says how many); the others are still served from the cache.
func TestVarnishPurgeByTag(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.set("/a", 1, "widgets.1 widgets", "")
	o.set("/b", 1, "widgets.2 widgets", "")
	o.set("/c", 1, "gadgets.1 gadgets", "")
	v := integration.NewVarnish(t, integration.VarnishOptions{Backend: o.addr()})
	for _, p := range []string{"/a", "/b", "/c"} {
		wantBody(t, v.URL(), p, body(p, 1))
	}
	o.bump() // the backend now answers v2 everywhere; Varnish still holds v1

	a := purge(t, v.PurgeURL(), "xkey-purge", "widgets.1")
	if a.status != http.StatusOK || a.header.Get("xkey-purged") != "1" {
		t.Fatalf("PURGE widgets.1 = %d %q (xkey-purged %q), want 200 and 1 object", a.status, a.body, a.header.Get("xkey-purged"))
	}
	wantBody(t, v.URL(), "/a", body("/a", 2))
	wantBody(t, v.URL(), "/b", body("/b", 1))
	wantBody(t, v.URL(), "/c", body("/c", 1))

	// A shared tag reaches every object carrying it, and several tags go in one header.
	a = purge(t, v.PurgeURL(), "xkey-purge", "widgets nothing.42")
	if a.status != http.StatusOK || a.header.Get("xkey-purged") != "2" {
		t.Fatalf("PURGE widgets = %d %q (xkey-purged %q), want 200 and 2 objects", a.status, a.body, a.header.Get("xkey-purged"))
	}
	wantBody(t, v.URL(), "/b", body("/b", 2))
	wantBody(t, v.URL(), "/c", body("/c", 1))
	if n := o.hitsOf("/c"); n != 1 {
		t.Fatalf("backend got %d requests for /c, whose tags were never purged, want 1", n)
	}
}

// TestVarnishPurgeRefused: a PURGE from an address outside the purgers ACL is refused
// (403) and purges nothing; one without tags is a 400.
func TestVarnishPurgeRefused(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.set("/a", 1, "widgets.1", "")
	// Only an address this test never uses may purge.
	v := integration.NewVarnish(t, integration.VarnishOptions{Backend: o.addr(), PurgeACL: []string{"192.0.2.123"}})
	wantBody(t, v.URL(), "/a", body("/a", 1))
	o.bump()

	if a := purge(t, v.PurgeURL(), "xkey-purge", "widgets.1"); a.status != http.StatusForbidden {
		t.Fatalf("PURGE from outside the ACL = %d %q, want 403", a.status, a.body)
	}
	wantBody(t, v.URL(), "/a", body("/a", 1))

	open := integration.NewVarnish(t, integration.VarnishOptions{Backend: o.addr()})
	if a := purge(t, open.PurgeURL(), "", ""); a.status != http.StatusBadRequest {
		t.Fatalf("PURGE without an xkey-purge header = %d %q, want 400", a.status, a.body)
	}
}

// TestVarnishStaleWhileRevalidate: once a response with stale-while-revalidate expires,
// the request that makes Varnish refetch it is answered at once with the stale body
// while the backend (held by the test) has not answered; the control, a response
// without it, is not served stale: that request waits for the backend and gets the new
// body (Varnish's own default would serve it stale for 10 seconds).
func TestVarnishStaleWhileRevalidate(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.set("/swr", 1, "widgets.1", "public, s-maxage=1, stale-while-revalidate=60")
	o.set("/strict", 1, "widgets.2", "public, s-maxage=1")
	v := integration.NewVarnish(t, integration.VarnishOptions{Backend: o.addr()})
	wantBody(t, v.URL(), "/swr", body("/swr", 1))
	wantBody(t, v.URL(), "/strict", body("/strict", 1))
	o.bump()

	release := o.holdFetches(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	select {
	case a := <-getUntilRefetch(t, o, v.URL(), "/swr", body("/swr", 1)):
		if a.body != body("/swr", 1) {
			t.Fatalf("GET /swr while its refetch is held = %d %q, want the stale %q", a.status, a.body, body("/swr", 1))
		}
	case <-ctx.Done():
		t.Fatal("GET /swr (stale-while-revalidate=60) waited for the backend's refetch instead of being served stale")
	}
	release()
	waitBody(t, v.URL(), "/swr", body("/swr", 2))

	release = o.holdFetches(t)
	ch := getUntilRefetch(t, o, v.URL(), "/strict", body("/strict", 1))
	select {
	case a := <-ch:
		t.Fatalf("GET /strict (no stale-while-revalidate) answered %d %q while the backend held its refetch: served stale", a.status, a.body)
	default:
	}
	release()
	select {
	case a := <-ch:
		if a.status != http.StatusOK || a.body != body("/strict", 2) {
			t.Fatalf("GET /strict (no stale-while-revalidate) that made Varnish refetch it = %d %q, want 200 %q: not the stale body",
				a.status, a.body, body("/strict", 2))
		}
	case <-ctx.Done():
		t.Fatal("GET /strict never answered after the backend was released")
	}
}

// TestVarnishSoftPurge: xkey-softpurge expires the tagged objects rather than removing
// them: one without stale-while-revalidate is fetched anew on the next request, one with
// it is refetched (served stale meanwhile) and then served new; untagged objects stay.
func TestVarnishSoftPurge(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.set("/a", 1, "widgets.1", "")
	o.set("/b", 1, "widgets.1", "public, s-maxage=3600, stale-while-revalidate=60")
	o.set("/c", 1, "widgets.2", "")
	v := integration.NewVarnish(t, integration.VarnishOptions{Backend: o.addr()})
	for _, p := range []string{"/a", "/b", "/c"} {
		wantBody(t, v.URL(), p, body(p, 1))
	}
	o.bump()

	a := purge(t, v.PurgeURL(), "xkey-softpurge", "widgets.1")
	if a.status != http.StatusOK || a.header.Get("xkey-purged") != "2" {
		t.Fatalf("PURGE with xkey-softpurge widgets.1 = %d %q (xkey-purged %q), want 200 and 2 objects", a.status, a.body, a.header.Get("xkey-purged"))
	}
	wantBody(t, v.URL(), "/a", body("/a", 2))
	waitBody(t, v.URL(), "/b", body("/b", 2))
	wantBody(t, v.URL(), "/c", body("/c", 1))
}
