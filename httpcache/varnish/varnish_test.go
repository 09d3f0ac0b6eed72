package varnish

// Unit tests, against a fake node (net/http/httptest). The tests against real Varnish
// are in integration/varnish.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeNode records the tag headers it gets and answers with the statuses in replies, in
// turn (200 once they run out).
type fakeNode struct {
	mu      sync.Mutex
	headers []string
	replies []int
}

func (f *fakeNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Method != "PURGE" {
		http.Error(w, "not a PURGE", http.StatusMethodNotAllowed)
		return
	}
	f.headers = append(f.headers, r.Header.Get("xkey-purge"))
	status := http.StatusOK
	if len(f.replies) > 0 {
		status, f.replies = f.replies[0], f.replies[1:]
	}
	w.WriteHeader(status)
}

func (f *fakeNode) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.headers...)
}

func newFake(t *testing.T, replies ...int) (*fakeNode, string) {
	f := &fakeNode{replies: replies}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL + "/"
}

func TestBatches(t *testing.T) {
	for _, c := range []struct {
		name          string
		tags          []string
		maxTags, maxB int
		want          []string
	}{
		{"one batch", []string{"a", "b", "c"}, 10, 100, []string{"a b c"}},
		{"by count", []string{"a", "b", "c", "d", "e"}, 2, 100, []string{"a b", "c d", "e"}},
		{"by bytes", []string{"aaaa", "bbbb", "cccc"}, 10, 9, []string{"aaaa bbbb", "cccc"}},
		{"a tag as long as the bound", []string{"aaaa", "bbbbbbbbb", "c"}, 10, 9, []string{"aaaa", "bbbbbbbbb", "c"}},
		{"repeats dropped", []string{"a", "b", "a", "b", "c"}, 10, 100, []string{"a b c"}},
		{"none", nil, 10, 100, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, u := newFake(t)
			p, err := NewPurger(Options{URLs: []string{u}, MaxTagsPerRequest: c.maxTags, MaxHeaderBytes: c.maxB})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Purge(context.Background(), c.tags); err != nil {
				t.Fatal(err)
			}
			if got := f.got(); fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("headers sent %q, want %q", got, c.want)
			}
		})
	}
}

func TestBadTagSendsNothing(t *testing.T) {
	f, u := newFake(t)
	p, err := NewPurger(Options{URLs: []string{u}, MaxHeaderBytes: 8})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "a b", "a,b", "a\tb", "a\x00", "é", "toolongtag"} {
		err := p.Purge(context.Background(), []string{"ok", bad})
		if !errors.Is(err, ErrBadTag) || !strings.Contains(err.Error(), fmt.Sprintf("%q (tag 2 of 2)", bad)) {
			t.Errorf("Purge with %q = %v, want ErrBadTag naming it", bad, err)
		}
	}
	if got := f.got(); len(got) != 0 {
		t.Fatalf("bad tags sent %q, want nothing", got)
	}
}

// TestRetries: 5xx and 429 are retried until an attempt succeeds or the attempts run
// out; any other 4xx is final at once.
func TestRetries(t *testing.T) {
	for _, c := range []struct {
		name     string
		replies  []int
		attempts int
		wantSent int
		wantErr  int // the status in the NodeError; 0 for none
	}{
		{"503 then 200", []int{503, 200}, 3, 2, 0},
		{"429 then 200", []int{429, 200}, 3, 2, 0},
		{"503 throughout", []int{503, 503, 503, 503}, 3, 3, 503},
		{"403 at once", []int{403, 200}, 3, 1, 403},
		{"400 at once", []int{400, 200}, 3, 1, 400},
		{"404 at once", []int{404, 200}, 3, 1, 404},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, u := newFake(t, c.replies...)
			p, err := NewPurger(Options{URLs: []string{u}, Attempts: c.attempts})
			if err != nil {
				t.Fatal(err)
			}
			err = p.Purge(context.Background(), []string{"a"})
			if n := len(f.got()); n != c.wantSent {
				t.Errorf("sent %d requests, want %d", n, c.wantSent)
			}
			var ne *NodeError
			switch {
			case c.wantErr == 0 && err != nil:
				t.Fatalf("Purge = %v, want success", err)
			case c.wantErr != 0 && (!errors.As(err, &ne) || ne.Status != c.wantErr || ne.URL != u || ne.Unsent != 1):
				t.Fatalf("Purge = %v, want a NodeError for %s with status %d and 1 tag unsent", err, u, c.wantErr)
			}
		})
	}
}

// TestNodesFailApart: one failing node does not stop the others, and the error names
// only the failing one.
func TestNodesFailApart(t *testing.T) {
	good, gu := newFake(t)
	bad, bu := newFake(t, 403)
	p, err := NewPurger(Options{URLs: []string{gu, bu}, MaxTagsPerRequest: 1})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Purge(context.Background(), []string{"a", "b"})
	if err == nil || !strings.Contains(err.Error(), bu) || strings.Contains(err.Error(), gu) || !strings.Contains(err.Error(), "2 tags not purged") {
		t.Fatalf("Purge = %v, want an error naming %s only, with its 2 tags unpurged", err, bu)
	}
	if got := good.got(); fmt.Sprint(got) != "[a b]" {
		t.Errorf("good node got %q, want both batches", got)
	}
	if got := bad.got(); fmt.Sprint(got) != "[a]" {
		t.Errorf("refusing node got %q, want the first batch only", got)
	}
}

func TestNewPurgerOptions(t *testing.T) {
	for _, opts := range []Options{
		{},
		{URLs: []string{"varnish-1:80"}},
		{URLs: []string{"ftp://varnish-1/"}},
		{URLs: []string{"http://varnish-1/"}, Header: "xkey purge"},
	} {
		if _, err := NewPurger(opts); !errors.Is(err, ErrBadOptions) {
			t.Errorf("NewPurger(%+v) = %v, want ErrBadOptions", opts, err)
		}
	}
}
