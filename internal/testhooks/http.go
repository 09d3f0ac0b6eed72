package testhooks

import "context"

// HTTP holds the hooks of the HTTP response cache (package httpcache). Each may be
// nil. They run for requests whose context comes from WithHTTP.
type HTTP struct {
	// AfterRender runs after the handler returned, before the response's dependencies
	// are checked and it is stored. id is the response's key.
	AfterRender func(id string)
	// Unfenced makes the cache store and serve responses without checking their
	// dependencies, as a response cache without them does, to show that the tests of
	// that check can fail.
	Unfenced bool
}

type httpKey struct{}

// WithHTTP returns a context carrying h.
func WithHTTP(ctx context.Context, h *HTTP) context.Context {
	return context.WithValue(ctx, httpKey{}, h)
}

// HTTPFrom returns ctx's HTTP hooks, or nil.
func HTTPFrom(ctx context.Context) *HTTP {
	h, _ := ctx.Value(httpKey{}).(*HTTP)
	return h
}
