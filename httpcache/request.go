package httpcache

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// maxIdentity bounds the identity of a cacheable request (its URL and varying
// headers): longer requests are served uncached, so that no one fills Redis with huge
// keys.
const maxIdentity = 16 << 10

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// identity returns what a response is cached by: the method, scheme, host, path,
// normalised query and the values of the headers the route varies on, each field
// length-prefixed so that no two requests share one by moving bytes between fields.
// why is non-empty when the request must not be cached.
func (rt *route) identity(r *http.Request) (id []byte, why string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return nil, "method"
	}
	if r.Header.Get("Authorization") != "" && !rt.varies("Authorization") {
		return nil, "authorization"
	}
	if len(r.Header.Values("Cookie")) > 0 && !rt.varies("Cookie") {
		return nil, "cookie"
	}
	if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		return nil, "request body"
	}
	if r.Header.Get("Range") != "" {
		return nil, "range"
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		// The handler would see a query other than the raw one (Go drops what it cannot
		// parse): not a key to share.
		return nil, "query"
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	b := make([]byte, 0, 256)
	b = field(b, r.Method)
	b = field(b, scheme)
	b = field(b, strings.ToLower(r.Host))
	b = field(b, r.URL.EscapedPath())
	// Encode sorts by name and keeps each name's values in order, the order the
	// handler sees them in.
	b = field(b, q.Encode())
	for _, h := range rt.vary {
		vals := r.Header.Values(h)
		b = binary.AppendUvarint(b, uint64(len(vals)))
		for _, v := range vals {
			b = field(b, v)
		}
	}
	if len(b) > maxIdentity {
		return nil, "too long"
	}
	return b, ""
}

func field(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// digest names an identity's Redis keys.
func digest(id []byte) string {
	sum := sha256.Sum256(id)
	return idEncoding.EncodeToString(sum[:20])
}

// varies reports whether the route varies on the header (canonical name).
func (rt *route) varies(h string) bool { return slices.Contains(rt.vary, h) }
