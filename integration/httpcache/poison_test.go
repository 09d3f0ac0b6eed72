package httpcache_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pgcache/pgcache/httpcache"
)

// raw sends a raw HTTP/1.1 request to srv and returns the response's X-Cache and body.
func raw(t *testing.T, srv *httptest.Server, request string) (string, string) {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Header.Get("X-Cache"), string(b)
}

// TestPoisoning: crafted requests, sent as raw bytes to a real server, never put into
// an entry a response another request would get for a different input: an unkeyed
// header changes nothing the handler shows; Host, a parameter's values in another
// order, a path spelled differently each have an entry of their own; a varied header
// in another case of its name shares the entry its value names; huge URLs and
// unparsable queries are not cached at all.
func TestPoisoning(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.cache(t, httpcache.Options{})
	var calls atomic.Int64
	h := wrap(t, c, httpcache.Route{Vary: []string{"Accept-Language"}}, echo(&calls, nil))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	req := func(target string, headers ...string) string {
		return fmt.Sprintf("GET %s HTTP/1.1\r\nHost: api.example\r\n%sConnection: close\r\n\r\n", target, strings.Join(headers, ""))
	}
	type probe struct {
		request string
		want    string // the body must contain it
	}
	// The attacker's requests first, then the victims'; each victim must get its own
	// answer, whatever the attacker left in the cache.
	attacks := []probe{
		{req("/p?a=2&a=1"), " a=2,1 "},
		{req("/p?b=1&a=1"), " a=1 b=1 "},
		{strings.Replace(req("/p?a=1"), "Host: api.example", "Host: evil.example", 1), "host=evil.example "},
		{req("/p?a=1", "X-Forwarded-Host: evil.example\r\n", "X-Original-URL: /admin\r\n"), "host=api.example path=/p a=1 "},
		{req("/p%2Fq?a=1"), "path=/p%2Fq "},
		{req("/p?a=1", "accept-language: de\r\n"), "Accept-Language=de "},
		{req("/p?a=1", "Accept-Language: de\r\n", "Accept-Language: fr\r\n"), "Accept-Language=de|fr "},
		{req("/p?a=%zz"), "a= "},
		{req("/p?a=1;b=2"), " a= b= "},
		{req("/p?a=1&pad=" + strings.Repeat("x", 20000)), " a=1 "},
	}
	victims := []probe{
		{req("/p?a=1&a=2"), " a=1,2 "},
		{req("/p?a=1"), "host=api.example path=/p a=1 b= Accept-Language= "},
		{req("/p//q?a=1"), "path=/p//q "},
		{req("/p?a=1", "ACCEPT-LANGUAGE: de\r\n"), "Accept-Language=de "},
		{req("/p?a=1", "Accept-Language: de, fr\r\n"), "Accept-Language=de, fr "},
		{req("/p?a=1", "Accept-Language: DE\r\n"), "Accept-Language=DE "},
	}
	for round := range 2 {
		for _, p := range append(attacks, victims...) {
			how, body := raw(t, srv, p.request)
			if !strings.Contains(body, p.want) {
				t.Errorf("round %d: %q answered %q (%s), want %q in it", round, strings.SplitN(p.request, "\r\n", 2)[0], body, how, p.want)
			}
		}
	}
	// The unkeyed-header attack shares the victim's entry, and shows the same thing.
	if s := c.Stats(); s.Bypassed != 6 { // 3 odd queries, twice
		t.Errorf("stats %+v: want 6 bypassed (unparsable queries and the huge URL, twice)", s)
	}
}
