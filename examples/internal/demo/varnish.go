package demo

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/pgcache/pgcache/integration"
)

// Front is an HTTP server with a Varnish in front of it.
type Front struct {
	// Varnish is the base URL clients request, without a trailing slash.
	Varnish string
	// Purge is the URL the worker sends PURGE requests to.
	Purge string
	// Backend is the base URL of the server itself, which Varnish fetches from.
	Backend string
}

// Varnish serves h on a loopback port and puts a Varnish running the shipped VCL
// (deploy/varnish/pgcache.vcl) in front of it, until the returned stop is called.
//
// The Varnish is the one at PGCACHE_VARNISH_URL when that is set (its VCL's backend must
// be PGCACHE_VARNISH_BACKEND, 127.0.0.1:8080 by default, where h is then served), else
// a container started through the test harness, in the host's network.
func Varnish(ctx context.Context, log *slog.Logger, h http.Handler) (_ Front, stop func(), err error) {
	varnishURL := strings.TrimSuffix(os.Getenv("PGCACHE_VARNISH_URL"), "/")
	listen := "127.0.0.1:0"
	if varnishURL != "" {
		listen = os.Getenv("PGCACHE_VARNISH_BACKEND")
		if listen == "" {
			listen = "127.0.0.1:8080"
		}
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return Front{}, nil, fmt.Errorf("demo: listen for Varnish's backend: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	stopServer := func() {
		_ = srv.Shutdown(context.WithoutCancel(ctx))
		<-served
	}
	f := Front{Backend: "http://" + ln.Addr().String()}
	if varnishURL != "" {
		f.Varnish, f.Purge = varnishURL, varnishURL+"/"
		return f, stopServer, nil
	}
	log.Info("starting a Varnish container (set PGCACHE_VARNISH_URL to use your own)")
	v, err := integration.StartVarnish(ctx, integration.VarnishOptions{Backend: ln.Addr().String()})
	if err != nil {
		stopServer()
		return Front{}, nil, err
	}
	f.Varnish, f.Purge = v.URL(), v.PurgeURL()
	return f, func() {
		_ = v.Close(context.WithoutCancel(ctx))
		stopServer()
	}, nil
}
