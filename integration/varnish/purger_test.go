package varnish_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgcache/pgcache/httpcache/varnish"
	"github.com/pgcache/pgcache/integration"
)

// rows primes n objects, /row/0 … /row/n-1, tagged "row.i" and "rows", in every node,
// then makes the backend answer their next version.
func rows(t *testing.T, o *origin, n int, nodes ...*integration.Varnish) []string {
	t.Helper()
	paths := make([]string, n)
	for i := range paths {
		paths[i] = fmt.Sprintf("/row/%d", i)
		o.set(paths[i], 1, fmt.Sprintf("row.%d rows", i), "")
	}
	for _, v := range nodes {
		for _, p := range paths {
			wantBody(t, v.URL(), p, body(p, 1))
		}
	}
	o.bump()
	return paths
}

// TestPurgerTwoNodes: a purge of many tags, in several batches, reaches both nodes and
// drops exactly the tagged objects in each.
func TestPurgerTwoNodes(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	a := integration.NewVarnish(t, integration.VarnishOptions{Backend: o.addr()})
	b := integration.NewVarnish(t, integration.VarnishOptions{Backend: o.addr()})
	paths := rows(t, o, 120, a, b)

	// The even rows, 60 tags, in batches of at most 16 tags and 100 header bytes.
	var tags []string
	for i := 0; i < len(paths); i += 2 {
		tags = append(tags, fmt.Sprintf("row.%d", i))
	}
	p, err := varnish.NewPurger(varnish.Options{URLs: []string{a.PurgeURL(), b.PurgeURL()}, MaxTagsPerRequest: 16, MaxHeaderBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.Purge(ctx, tags); err != nil {
		t.Fatalf("Purge of %d tags: %v", len(tags), err)
	}
	for _, v := range []*integration.Varnish{a, b} {
		for i, path := range paths {
			want := body(path, 1) // still cached
			if i%2 == 0 {
				want = body(path, 2) // purged: fetched anew
			}
			wantBody(t, v.URL(), path, want)
		}
	}
}

// TestPurgerNodeDown: with one node down, Purge names it in its error (after retrying)
// and still purges the other.
func TestPurgerNodeDown(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	up := integration.NewVarnish(t, integration.VarnishOptions{Backend: o.addr()})
	down := integration.NewVarnish(t, integration.VarnishOptions{Backend: o.addr()})
	paths := rows(t, o, 4, up)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := down.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	p, err := varnish.NewPurger(varnish.Options{URLs: []string{up.PurgeURL(), down.PurgeURL()}, Attempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Purge(ctx, []string{"row.1", "row.2"})
	var nodeErr *varnish.NodeError
	if !errors.As(err, &nodeErr) {
		t.Fatalf("Purge with a node down = %v, want a *varnish.NodeError", err)
	}
	if nodeErr.URL != down.PurgeURL() || nodeErr.Unsent != 2 || !strings.Contains(err.Error(), down.PurgeURL()) ||
		strings.Contains(err.Error(), up.PurgeURL()) || !strings.Contains(err.Error(), "attempt 3 of 3") {
		t.Fatalf("Purge with %s down: %v (node %s, %d unsent), want only the down node named, 2 tags unsent, after 3 attempts",
			down.PurgeURL(), err, nodeErr.URL, nodeErr.Unsent)
	}
	for i, path := range paths {
		want := body(path, 1)
		if i == 1 || i == 2 {
			want = body(path, 2)
		}
		wantBody(t, up.URL(), path, want)
	}
}

// TestPurgerRefused: a node that refuses the purge (403, outside its ACL) is reported
// at once, naming the ACL, and not retried.
func TestPurgerRefused(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	v := integration.NewVarnish(t, integration.VarnishOptions{Backend: o.addr(), PurgeACL: []string{"192.0.2.123"}})
	p, err := varnish.NewPurger(varnish.Options{URLs: []string{v.PurgeURL()}, Attempts: 5})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = p.Purge(ctx, []string{"row.1"})
	var nodeErr *varnish.NodeError
	if !errors.As(err, &nodeErr) || nodeErr.Status != 403 || !strings.Contains(err.Error(), "ACL") || strings.Contains(err.Error(), "attempt") {
		t.Fatalf("Purge refused by the ACL = %v, want a NodeError with status 403 after one attempt, naming the ACL", err)
	}
}

// TestPurgerBadTag: a tag Varnish would read as two (a space) or that holds a control
// character is refused with an error naming it, and nothing is sent: the good tags'
// objects are still cached.
func TestPurgerBadTag(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	v := integration.NewVarnish(t, integration.VarnishOptions{Backend: o.addr()})
	paths := rows(t, o, 2, v)
	p, err := varnish.NewPurger(varnish.Options{URLs: []string{v.PurgeURL()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, bad := range []string{"row.1 row.0", "row.1\r\nX-Evil: 1", "row.\x01", ""} {
		err := p.Purge(ctx, []string{"row.0", bad})
		if !errors.Is(err, varnish.ErrBadTag) || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Fatalf("Purge with tag %q = %v, want ErrBadTag naming the tag", bad, err)
		}
	}
	for _, path := range paths {
		wantBody(t, v.URL(), path, body(path, 1))
	}
	// The control: the good tag alone is purged.
	if err := p.Purge(ctx, []string{"row.0"}); err != nil {
		t.Fatal(err)
	}
	wantBody(t, v.URL(), paths[0], body(paths[0], 2))
}
