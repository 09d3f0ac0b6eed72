// Package httpcache caches HTTP responses of GET and HEAD requests in Redis, next to
// the rows they show, and drops them when those rows change.
//
// Wrap a handler with [Cache.Wrap]: responses are cached by method, normalised URL and
// the request headers the route varies on ([Route.Vary]). The dependencies of a
// response are recorded, not declared: every read the handler makes through a
// readthrough repository with the request's context (Get, GetMany, By(...).Get,
// ListBy(...).Get) registers the rows, lookup entries and tables it reads (see
// readthrough.DependencyRecorder), and a cached response is served only while none of
// them has been invalidated since: by a write through the library at once, by any
// other writer once the invalidator deleted the row's keys. A response rendered while
// one of its rows changed is not stored, and one stored just before is not served
// (see internal/store's responses.go for the argument).
//
// Every cached response has a strong ETag; a matching If-None-Match (or, when the
// handler set Last-Modified, If-Modified-Since) is answered 304 Not Modified without
// rendering. Responses carry Cache-Control (s-maxage and stale-while-revalidate as
// the route says) and the tags of their rows and tables in a surrogate-key header
// (Options.TagHeader: Fastly's Surrogate-Key, Cloudflare's Cache-Tag, Varnish xkey's
// xkey), which the invalidator purges through an invalidator.Purger.
//
// # Safety
//
// Requests with Authorization or Cookie headers are neither served from nor stored in
// the cache unless the route varies on those headers (then each value has its own
// entries, and the response is marked private for shared caches). Responses with
// Set-Cookie, with Cache-Control private, no-store or no-cache, with a status not in
// Options.Statuses, with a Vary the route does not declare, or larger than
// Options.MaxBody are never stored. Request headers the route does not vary on are not
// part of the key (a handler must not read them), and the URL's query is normalised as
// far as r.URL.Query() cannot tell (parameters sorted by name, the order of a
// parameter's values kept); an unparsable query, a Range, a request body or a URL and
// varied headers over 16 KiB are not cached.
//
// # Stampedes
//
// Concurrent requests for one uncached response render it once, across processes: the
// first takes a lease in Redis, the others poll for the entry for up to Options.Wait,
// then render themselves.
package httpcache
