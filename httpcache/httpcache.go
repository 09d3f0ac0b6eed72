package httpcache

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/readthrough"
)

// ErrConfig: bad Options or Route. The message says what to change.
var ErrConfig = errors.New("httpcache: bad configuration")

// Options configure a Cache. The zero value gives the defaults.
type Options struct {
	// Prefix starts the Redis keys of responses. Default "pgc" (readthrough's).
	Prefix string
	// TTL is how long a response stays cached, unless its route says otherwise.
	// Default 1 minute.
	TTL time.Duration
	// RedisTimeout bounds each Redis operation; a request whose Redis operation fails
	// is rendered. Default 100ms.
	RedisTimeout time.Duration
	// Lease is how long a render holds the lease on its response (see Wait). Default 5s.
	Lease time.Duration
	// Wait is how long a request waits for a response another request is rendering
	// before rendering it itself; negative means never wait. Default 2s.
	Wait time.Duration
	// Poll is how often a waiting request looks for the response. Default 10ms.
	Poll time.Duration
	// MaxBody is the largest body stored, in bytes; larger responses are streamed to
	// the client and not stored. Default 1 MiB.
	MaxBody int
	// Statuses are the status codes of responses that may be stored. Default 200,
	// 203, 204, 300, 301, 404, 410.
	Statuses []int
	// TagHeader is the response header that carries the tags of a response's rows and
	// tables, space-separated: "Surrogate-Key" (Fastly, the default), "Cache-Tag"
	// (Cloudflare) or "xkey" (Varnish with vmod xkey). "-" sends none.
	TagHeader string
	// MaxTagHeader bounds the tag header in bytes: a response with more tags is sent
	// without the header and with s-maxage=0, since a shared cache could not purge it.
	// Default 8000.
	MaxTagHeader int
	// Logger receives warnings. Nil discards them.
	Logger *slog.Logger
}

// Route configures the caching of one handler. The zero Route caches for
// Options.TTL, varies on no header, and lets shared caches keep nothing (s-maxage=0).
type Route struct {
	// Off turns caching off: requests go to the handler untouched.
	Off bool
	// TTL is how long responses stay cached in Redis. Zero means Options.TTL.
	TTL time.Duration
	// Vary names the request headers responses differ by: each value has entries of
	// its own, and responses say so in Vary. Authorization and Cookie requests are
	// cached only when named here (each user then has their own entries).
	Vary []string
	// MaxAge, SMaxAge and StaleWhileRevalidate are sent in Cache-Control (max-age for
	// browsers, s-maxage for shared caches such as CDNs, which the invalidator purges
	// by tag; stale-while-revalidate when positive), whole seconds. A response whose
	// handler set Cache-Control keeps it.
	MaxAge, SMaxAge, StaleWhileRevalidate time.Duration
}

// Cache caches the responses of the handlers it wraps. It is safe for concurrent use.
type Cache struct {
	st       *store.Store
	prefix   keys.Prefix
	opts     Options
	statuses map[int]bool
	log      *slog.Logger
	stats    counters
}

// New returns a Cache storing responses in rdb.
func New(rdb redis.UniversalClient, opts Options) (*Cache, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: New needs a Redis client", ErrConfig)
	}
	if why := store.ReadsReplicas(rdb); why != "" {
		return nil, fmt.Errorf("%w: the Redis client reads from replicas (%s), which serve a response after its invalidation for as long as they lag: give pgcache a client without %[2]s", ErrConfig, why)
	}
	if opts.Prefix == "" {
		opts.Prefix = "pgc"
	}
	if _, err := keys.NewSpace(opts.Prefix, "t", "v"); err != nil {
		return nil, fmt.Errorf("%w: Options.Prefix: %w", ErrConfig, err)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&opts.TTL, time.Minute)
	def(&opts.RedisTimeout, 100*time.Millisecond)
	def(&opts.Lease, 5*time.Second)
	def(&opts.Wait, 2*time.Second)
	def(&opts.Poll, 10*time.Millisecond)
	if opts.TTL < 0 || opts.RedisTimeout < 0 || opts.Lease < 0 || opts.Poll < 0 {
		return nil, fmt.Errorf("%w: TTL, RedisTimeout, Lease and Poll must not be negative", ErrConfig)
	}
	if opts.MaxBody == 0 {
		opts.MaxBody = 1 << 20
	}
	if opts.MaxTagHeader == 0 {
		opts.MaxTagHeader = 8000
	}
	if opts.TagHeader == "" {
		opts.TagHeader = "Surrogate-Key"
	}
	if opts.Statuses == nil {
		opts.Statuses = []int{200, 203, 204, 300, 301, 404, 410}
	}
	st := map[int]bool{}
	for _, s := range opts.Statuses {
		if s < 200 || s > 599 {
			return nil, fmt.Errorf("%w: Options.Statuses: %d is not a final status code", ErrConfig, s)
		}
		st[s] = true
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	return &Cache{
		st:       store.New(rdb, opts.RedisTimeout, "h"+hex.EncodeToString(id[:])),
		prefix:   keys.Prefix(opts.Prefix),
		opts:     opts,
		statuses: st,
		log:      opts.Logger,
	}, nil
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats { return c.stats.snapshot() }

// route is a Route checked, with its defaults.
type route struct {
	Route
	ttl  time.Duration
	vary []string // canonical header names, sorted, distinct
	cc   string   // the Cache-Control sent with its responses
}

// Wrap returns next with its GET and HEAD responses cached as rt says.
func (c *Cache) Wrap(rt Route, next http.Handler) (http.Handler, error) {
	if next == nil {
		return nil, fmt.Errorf("%w: Wrap needs a handler", ErrConfig)
	}
	if rt.TTL < 0 || rt.MaxAge < 0 || rt.SMaxAge < 0 || rt.StaleWhileRevalidate < 0 {
		return nil, fmt.Errorf("%w: Route durations must not be negative", ErrConfig)
	}
	r := &route{Route: rt, ttl: rt.TTL}
	if r.ttl == 0 {
		r.ttl = c.opts.TTL
	}
	for _, h := range rt.Vary {
		if h == "" || strings.ContainsAny(h, " ,:\t\r\n") {
			return nil, fmt.Errorf("%w: Route.Vary: %q is not a header name", ErrConfig, h)
		}
		if h == "*" {
			return nil, fmt.Errorf("%w: Route.Vary: \"*\" varies on everything; use Off instead", ErrConfig)
		}
		r.vary = append(r.vary, http.CanonicalHeaderKey(h))
	}
	slices.Sort(r.vary)
	r.vary = slices.Compact(r.vary)
	if r.varies("Authorization") || r.varies("Cookie") {
		// One user's response: never for shared caches.
		r.cc = "private, max-age=" + secs(rt.MaxAge)
	} else {
		r.cc = "public, max-age=" + secs(rt.MaxAge) + ", s-maxage=" + secs(rt.SMaxAge)
		if rt.StaleWhileRevalidate > 0 {
			r.cc += ", stale-while-revalidate=" + secs(rt.StaleWhileRevalidate)
		}
	}
	return &handler{c: c, rt: r, next: next}, nil
}

func secs(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) }

type handler struct {
	c    *Cache
	rt   *route
	next http.Handler
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := h.c
	if h.rt.Off {
		h.next.ServeHTTP(w, r)
		return
	}
	id, why := h.rt.identity(r)
	if why != "" {
		c.stats.bypassed.Add(1)
		h.next.ServeHTTP(w, r)
		return
	}
	ctx := r.Context()
	hooks := testhooks.HTTPFrom(ctx)
	name := digest(id)
	key, lease := c.prefix.Response(name)

	e, ok := c.lookup(ctx, key, id, hooks)
	if ok {
		c.stats.hits.Add(1)
		c.serve(w, r, e, "HIT")
		return
	}
	if e == pass {
		// The last render was not storable: no lease, no waiting (see pass).
		c.stats.bypassed.Add(1)
		h.next.ServeHTTP(w, r)
		return
	}
	c.stats.misses.Add(1)
	token, err := c.st.TakeResponseLease(ctx, lease, c.opts.Lease)
	if err != nil {
		c.stats.errors.Add(1)
	}
	if err == nil && token == "" && c.opts.Wait > 0 {
		if e, token = c.wait(ctx, key, lease, id, hooks); e != nil && e != pass {
			c.stats.hits.Add(1)
			c.stats.waited.Add(1)
			c.serve(w, r, e, "HIT")
			return
		}
	}
	if token != "" {
		defer func() {
			if err := c.st.ReleaseResponseLease(context.WithoutCancel(ctx), lease, token); err != nil {
				c.stats.errors.Add(1)
			}
		}()
		// Another render may have stored the response and given its lease back between
		// the lookup and this lease.
		if e, ok := c.lookup(ctx, key, id, hooks); ok {
			c.stats.hits.Add(1)
			c.serve(w, r, e, "HIT")
			return
		}
	}
	h.render(w, r, key, name, id, hooks)
}

// pass is what lookup returns, with false, for a pass marker: the response's last
// render was not storable (Set-Cookie, private, a status not stored...), so requests
// for it go to the handler at once for a while rather than queue behind one another's
// lease. Varnish calls it hit-for-pass.
var pass = &entry{}

// passMarker is the entry of a pass marker (no encoded entry starts with 0), kept for
// at most passTTL.
var passMarker = []byte{0}

const passTTL = 5 * time.Second

// lookup returns the fresh entry at key for the request identity id, or pass and false
// for a pass marker.
func (c *Cache) lookup(ctx context.Context, key string, id []byte, hooks *testhooks.HTTP) (*entry, bool) {
	b, state, err := c.st.GetResponse(ctx, key, hooks != nil && hooks.Unfenced)
	if err != nil {
		c.stats.errors.Add(1)
		return nil, false
	}
	switch state {
	case store.ResponseMissing:
		return nil, false
	case store.ResponseStale:
		c.stats.stale.Add(1)
		return nil, false
	}
	if len(b) == 1 && b[0] == 0 {
		return pass, false
	}
	e, err := decodeEntry(b)
	if err != nil || string(e.identity) != string(id) {
		// Undecodable, or another request's (a digest collision): never served.
		return nil, false
	}
	return e, true
}

// wait polls for the entry another request is rendering, for up to Options.Wait; if
// the lease is given back or expires meanwhile it takes it and returns its token.
func (c *Cache) wait(ctx context.Context, key, lease string, id []byte, hooks *testhooks.HTTP) (*entry, string) {
	deadline := time.Now().Add(c.opts.Wait)
	t := time.NewTimer(c.opts.Poll)
	defer t.Stop()
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, ""
		case <-t.C:
		}
		if e, ok := c.lookup(ctx, key, id, hooks); ok || e == pass {
			return e, ""
		}
		token, err := c.st.TakeResponseLease(ctx, lease, c.opts.Lease)
		if err != nil {
			c.stats.errors.Add(1)
			return nil, ""
		}
		if token != "" {
			return nil, token
		}
		t.Reset(c.opts.Poll)
	}
	return nil, ""
}

// render calls the handler with a dependency recorder in its context, stores the
// response if it may be, and sends it.
func (h *handler) render(w http.ResponseWriter, r *http.Request, key, name string, id []byte, hooks *testhooks.HTTP) {
	c := h.c
	c.stats.renders.Add(1)
	rec := &recorder{st: c.st, ttl: h.rt.ttl + c.opts.Lease}
	ctx := readthrough.WithDependencyRecorder(r.Context(), rec)
	cw := newCapture(w, c.opts.MaxBody)
	h.next.ServeHTTP(cw, r.WithContext(ctx))
	if cw.through {
		c.stats.notStored.Add(1)
		return
	}
	if cw.status == 0 {
		cw.status = http.StatusOK
	}
	if hooks != nil && hooks.AfterRender != nil {
		hooks.AfterRender(name)
	}
	deps, tags, recorded := rec.result()
	e := &entry{identity: id, status: cw.status, header: cw.header, body: cw.body.Bytes(), stored: time.Now().UnixMilli(),
		deps: deps, tags: tags}
	if !recorded || !h.storable(e) {
		c.stats.notStored.Add(1)
		if recorded {
			// Not storable because of what the handler answers: requests waiting for
			// it should not wait for the next render.
			if _, err := c.st.PutResponse(ctx, key, nil, passMarker, min(h.rt.ttl, passTTL), true); err != nil {
				c.stats.errors.Add(1)
			}
		}
		h.send(w, r, e, "BYPASS", false)
		return
	}
	h.complete(e)
	// Stored only if no row read changed while rendering (a hit would refuse it
	// anyway; this spares the write).
	stored, err := c.st.PutResponse(ctx, key, deps, e.encode(), h.rt.ttl, hooks != nil && hooks.Unfenced)
	switch {
	case err != nil:
		c.stats.errors.Add(1)
	case stored:
		c.stats.stored.Add(1)
	default:
		c.stats.fenced.Add(1)
		// A row it read changed meanwhile, and the invalidator may have purged the
		// CDN already: no shared cache may keep this one.
		e.header.Set("Cache-Control", "no-store")
		e.header.Del(c.opts.TagHeader)
	}
	c.serve(w, r, e, "MISS")
}

// storable reports whether a rendered response may be stored.
func (h *handler) storable(e *entry) bool {
	if !h.c.statuses[e.status] || len(e.header.Values("Set-Cookie")) > 0 {
		return false
	}
	for _, v := range e.header.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			d, _, _ = strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(d) {
			case "private", "no-store", "no-cache":
				return false
			}
		}
	}
	for _, v := range e.header.Values("Vary") {
		for f := range strings.SplitSeq(v, ",") {
			f = strings.TrimSpace(f)
			if f != "" && !h.rt.varies(http.CanonicalHeaderKey(f)) {
				return false // varies on what the key does not hold (or "*")
			}
		}
	}
	return true
}

// hopHeaders are not stored: they describe one connection or one exchange.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Connection", "Te", "Trailer",
	"Transfer-Encoding", "Upgrade", "Date", "Age", "X-Cache"}

// complete adds the headers of a cached response: ETag, Cache-Control, Vary and tags.
func (h *handler) complete(e *entry) {
	hd := e.header
	for _, k := range hopHeaders {
		hd.Del(k)
	}
	if hd.Get("Etag") == "" {
		sum := sha256.New()
		for _, k := range []string{"Content-Type", "Content-Encoding", "Content-Language"} {
			sum.Write([]byte(hd.Get(k) + "\n"))
		}
		sum.Write(e.body)
		hd.Set("Etag", `"`+idEncoding.EncodeToString(sum.Sum(nil)[:15])+`"`)
	}
	cc := h.rt.cc
	tags := strings.Join(e.tags, " ")
	if len(tags) > h.c.opts.MaxTagHeader {
		tags = ""
		cc = strings.Replace(cc, ", s-maxage="+secs(h.rt.SMaxAge), ", s-maxage=0", 1)
	}
	if hd.Get("Cache-Control") == "" {
		hd.Set("Cache-Control", cc)
	}
	if len(h.rt.vary) > 0 {
		hd.Set("Vary", strings.Join(h.rt.vary, ", "))
	}
	if tags != "" && h.c.opts.TagHeader != "-" {
		hd.Set(h.c.opts.TagHeader, tags)
	}
}

// serve sends a cached (or just stored) response, or 304 when the request's
// validators match it.
func (c *Cache) serve(w http.ResponseWriter, r *http.Request, e *entry, how string) {
	if notModified(r, e.header) {
		c.stats.notModified.Add(1)
		hd := w.Header()
		for _, k := range []string{"Cache-Control", "Content-Location", "Etag", "Expires", "Vary", "Last-Modified", c.opts.TagHeader} {
			if v, ok := e.header[http.CanonicalHeaderKey(k)]; ok {
				hd[http.CanonicalHeaderKey(k)] = v
			}
		}
		hd.Set("X-Cache", how)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	(&handler{c: c}).send(w, r, e, how, true)
}

// send writes e to w.
func (h *handler) send(w http.ResponseWriter, r *http.Request, e *entry, how string, cached bool) {
	hd := w.Header()
	for k, v := range e.header {
		hd[k] = v
	}
	hd.Set("X-Cache", how)
	if cached {
		hd.Set("Age", strconv.FormatInt(max(0, time.Now().UnixMilli()-e.stored)/1000, 10))
		if hd.Get("Content-Length") == "" && e.status != http.StatusNoContent && e.status != http.StatusNotModified {
			hd.Set("Content-Length", strconv.Itoa(len(e.body)))
		}
	}
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(e.body)
	}
}

// notModified reports whether the request's validators match the response: its
// If-None-Match (weak comparison, as RFC 9110 says for it) or, without one, its
// If-Modified-Since against the response's Last-Modified.
func notModified(r *http.Request, hd http.Header) bool {
	if inm := r.Header.Values("If-None-Match"); len(inm) > 0 {
		etag := strings.TrimPrefix(hd.Get("Etag"), "W/")
		if etag == "" {
			return false
		}
		for _, v := range inm {
			for t := range strings.SplitSeq(v, ",") {
				t = strings.TrimSpace(t)
				if t == "*" || strings.TrimPrefix(t, "W/") == etag {
					return true
				}
			}
		}
		return false
	}
	ims, lm := r.Header.Get("If-Modified-Since"), hd.Get("Last-Modified")
	if ims == "" || lm == "" {
		return false
	}
	since, err1 := http.ParseTime(ims)
	mod, err2 := http.ParseTime(lm)
	return err1 == nil && err2 == nil && !mod.After(since)
}
