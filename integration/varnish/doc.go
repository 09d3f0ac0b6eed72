// Package varnish holds the tests of pgcache's HTTP edge with Varnish Cache:
// deploy/varnish/pgcache.vcl, the VCL users deploy, run in a real Varnish with vmod xkey,
// and the purger of package httpcache/varnish against one and two such nodes. The
// backend is a Go HTTP server of the test process. It has only tests.
package varnish
