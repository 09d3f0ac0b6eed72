package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgcache/pgcache/httpcache/varnish"
)

// TestPurgeVarnishFlag: -purge-varnish (or $PGCACHE_PURGE_VARNISH), -purge-timeout and
// -repurge-after are read into the worker's purger; without them the worker purges
// nothing. -repurge-after 0 turns the second purge off (a negative RepurgeAfter).
func TestPurgeVarnishFlag(t *testing.T) {
	t.Parallel()
	base := []string{"-postgres", "postgres://h/db", "-redis", "h:6379"}
	envOf := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		urls    []string
		timeout time.Duration
		repurge time.Duration
	}{
		{"none", nil, nil, nil, 2 * time.Second, 2 * time.Second},
		{"flag", []string{"-purge-varnish", "http://v1:80, http://v2:80,", "-purge-timeout", "500ms", "-repurge-after", "0"}, nil,
			[]string{"http://v1:80", "http://v2:80"}, 500 * time.Millisecond, -1},
		{"env", nil, map[string]string{"PGCACHE_PURGE_VARNISH": "https://v1/", "PGCACHE_PURGE_TIMEOUT": "3s", "PGCACHE_REPURGE_AFTER": "5s"},
			[]string{"https://v1/"}, 3 * time.Second, 5 * time.Second},
	} {
		cfg, err := parse(append(base, tc.args...), envOf(tc.env), io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !slices.Equal(cfg.purge.varnish, tc.urls) || cfg.purge.timeout != tc.timeout {
			t.Errorf("%s: purge config %+v, want %q and %s", tc.name, cfg.purge, tc.urls, tc.timeout)
		}
		p, err := cfg.purge.purger(nil)
		if err != nil {
			t.Fatalf("%s: purger: %v", tc.name, err)
		}
		opts := workerOptions(cfg, []string{"t"}, p, nil)
		if _, ok := opts.Invalidator.Purger.(*varnish.Purger); ok != (tc.urls != nil) || opts.Invalidator.PurgeTimeout != tc.timeout ||
			opts.Invalidator.RepurgeAfter != tc.repurge {
			t.Errorf("%s: invalidator options %+v: want a Varnish purger iff URLs are given, timeout %s, repurge after %s", tc.name, opts.Invalidator, tc.timeout, tc.repurge)
		}
		if tc.urls == nil && opts.Invalidator.Purger != nil {
			t.Errorf("%s: a purger without -purge-varnish: %#v", tc.name, opts.Invalidator.Purger)
		}
	}
}

// TestPurgeVarnishFlagRefuses: a URL that is not http(s)://host and a bad -purge-timeout
// are refused with an error naming the flag and the value.
func TestPurgeVarnishFlagRefuses(t *testing.T) {
	t.Parallel()
	base := []string{"-postgres", "postgres://h/db", "-redis", "h:6379"}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-purge-varnish", "v1:80"}, []string{"-purge-varnish", `"v1:80"`, "http://host:port/"}},
		{[]string{"-purge-varnish", "http://v1:80,ftp://v2"}, []string{"-purge-varnish", `"ftp://v2"`}},
		{[]string{"-purge-varnish", "http://"}, []string{"-purge-varnish", `"http://"`}},
		{[]string{"-purge-timeout", "soon"}, []string{"-purge-timeout", `"soon"`, "positive duration"}},
		{[]string{"-purge-timeout", "0s"}, []string{"-purge-timeout", "positive duration"}},
		{[]string{"-repurge-after", "-1s"}, []string{"-repurge-after", `"-1s"`, "0 for no second purge"}},
	} {
		_, err := parse(append(base, tc.args...), noEnv, io.Discard)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %v, want one saying %s", tc.args, err, w)
			}
		}
	}
}
