package httpcache

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
)

// TestEntryRoundTrip: an entry decodes to what was encoded; every truncation and a
// wrong version are refused.
func TestEntryRoundTrip(t *testing.T) {
	e := &entry{identity: []byte("id\x00x"), status: 404, header: http.Header{"Content-Type": {"a/b"}, "X": {"1", ""}},
		body: []byte("body"), stored: 12345, tags: []string{"pgc-a", "pgct-b"}}
	b := e.encode()
	got, err := decodeEntry(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("decoded %+v, want %+v", got, e)
	}
	for i := range len(b) {
		if _, err := decodeEntry(b[:i]); err == nil {
			t.Errorf("truncated to %d bytes: decoded", i)
		}
	}
	b[0] = entryVersion - 1
	if _, err := decodeEntry(b); err == nil {
		t.Error("another version decoded")
	}
}

// FuzzDecodeEntry: no input makes decodeEntry panic, and what it accepts encodes back
// to the same bytes.
func FuzzDecodeEntry(f *testing.F) {
	f.Add((&entry{identity: []byte("i"), status: 200, header: http.Header{}, body: []byte("b")}).encode())
	f.Add([]byte{entryVersion, 0, 200, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(b)
		if err != nil {
			return
		}
		if _, err := decodeEntry(e.encode()); err != nil {
			t.Fatalf("re-encoded entry refused: %v", err)
		}
	})
}

// TestIdentity: requests whose parsed queries (r.URL.Query()), host, path and varied
// headers are the same share an identity; any other difference, or a varied header's
// value, does not.
func TestIdentity(t *testing.T) {
	rt := &route{vary: []string{"Accept-Language"}}
	id := func(target string, h ...string) string {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		for i := 0; i+1 < len(h); i += 2 {
			r.Header.Add(h[i], h[i+1])
		}
		b, why := rt.identity(r)
		if why != "" {
			return "bypass:" + why
		}
		return string(b)
	}
	same := [][2]string{
		{"/p?a=1&b=2", "/p?b=2&a=1"},
		{"http://API.example/p", "http://api.example/p"},
		{"/p?a=", "/p?a"},
	}
	for _, s := range same {
		if id(s[0]) != id(s[1]) {
			t.Errorf("%s and %s differ", s[0], s[1])
		}
	}
	differ := [][2]string{
		{"/p?a=1&a=2", "/p?a=2&a=1"},
		{"/p%2Fq", "/p/q"},
		{"/p", "/p/"},
		{"http://a.example/p", "http://b.example/p"},
	}
	for _, d := range differ {
		if id(d[0]) == id(d[1]) {
			t.Errorf("%s and %s share an identity", d[0], d[1])
		}
	}
	if id("/p", "Accept-Language", "en") == id("/p", "Accept-Language", "fr") || id("/p", "Accept-Language", "a", "Accept-Language", "b") == id("/p", "Accept-Language", "a, b") {
		t.Error("varied header values share an identity")
	}
	if id("/p", "X-Other", "1") != id("/p") {
		t.Error("an unvaried header is in the identity")
	}
	for _, bypass := range []string{id("/p", "Authorization", "x"), id("/p", "Cookie", "a=b"), id("/p?a=%zz"), id("/p?a=1;b"), id("/p", "Range", "bytes=0-1")} {
		if len(bypass) < 7 || bypass[:7] != "bypass:" {
			t.Errorf("not bypassed: %q", bypass)
		}
	}
}

// TestNotModified: If-None-Match by weak comparison, lists and "*"; If-Modified-Since
// only without If-None-Match and with a Last-Modified.
func TestNotModified(t *testing.T) {
	hd := http.Header{"Etag": {`"abc"`}, "Last-Modified": {"Mon, 02 Jan 2006 15:04:05 GMT"}}
	cases := []struct {
		h    []string
		want bool
	}{
		{[]string{"If-None-Match", `"abc"`}, true},
		{[]string{"If-None-Match", `W/"abc"`}, true},
		{[]string{"If-None-Match", `"x", "abc"`}, true},
		{[]string{"If-None-Match", `*`}, true},
		{[]string{"If-None-Match", `"abcd"`}, false},
		{[]string{"If-None-Match", `"x"`, "If-Modified-Since", "Mon, 02 Jan 2006 15:04:05 GMT"}, false},
		{[]string{"If-Modified-Since", "Mon, 02 Jan 2006 15:04:05 GMT"}, true},
		{[]string{"If-Modified-Since", "Mon, 02 Jan 2006 15:04:04 GMT"}, false},
		{[]string{"If-Modified-Since", "garbage"}, false},
		{nil, false},
	}
	for _, c := range cases {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		for i := 0; i+1 < len(c.h); i += 2 {
			r.Header.Add(c.h[i], c.h[i+1])
		}
		if got := notModified(r, hd); got != c.want {
			t.Errorf("%q: %v, want %v", c.h, got, c.want)
		}
	}
}
