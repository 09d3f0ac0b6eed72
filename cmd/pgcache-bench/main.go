// Command pgcache-bench measures the cache against its baselines in one run, on servers
// started through the test harness (or named by PGCACHE_POSTGRES_URL and
// PGCACHE_REDIS_ADDR), and writes bench-results.json and SVG plots. The HTTP edge
// (httpcache, and a Varnish container in front of it) is measured too unless
// -varnish=false.
//
//	make bench                    (a short run, under five minutes)
//	go run -C cmd ./pgcache-bench -duration 10s
//	go run -C cmd ./pgcache-bench -varnish=false
//
// Every figure is measured in the same run as its baseline (a raw go-redis GET of the
// same bytes, an uncached GORM First), so ratios compare like with like.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

func main() {
	var opts options
	flag.DurationVar(&opts.duration, "duration", 2*time.Second, "how long each throughput or latency measurement runs")
	flag.StringVar(&opts.out, "out", "bench-results.json", "where to write the results")
	flag.StringVar(&opts.plots, "plots", "bench-results", "directory for the SVG plots")
	flag.IntVar(&opts.commitRate, "commit-rate", 1000, "commits per second for the invalidation-lag measurement")
	flag.BoolVar(&opts.varnish, "varnish", true, "measure the HTTP response cache and Varnish in front of it (a Varnish container with deploy/varnish/pgcache.vcl); -varnish=false skips them")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := run(ctx, log, opts)
	if err != nil {
		log.Error("benchmark failed", "error", err)
		os.Exit(1)
	}
	res.print(os.Stdout)
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(opts.out, append(b, '\n'), 0o644); err != nil {
		log.Error("write results", "error", err)
		os.Exit(1)
	}
	if err := res.plot(opts.plots); err != nil {
		log.Error("write plots", "error", err)
		os.Exit(1)
	}
	fmt.Printf("\nwrote %s and %s\n", opts.out, filepath.Join(opts.plots, "*.svg"))
}

type options struct {
	duration   time.Duration
	out, plots string
	commitRate int
	varnish    bool
}
