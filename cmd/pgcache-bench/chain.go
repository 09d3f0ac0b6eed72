package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/httpcache"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/readthrough"
)

// chainCommits is how many commits the end-to-end Varnish measurement times.
const chainCommits = 200

// chain is the whole chain of issue 18 on the widgets table: an API (GET /widgets/{id})
// behind the response cache (tags in xkey, s-maxage an hour), a Varnish in front, and
// an invalidator worker of its own (slot and prefix of its own) purging that Varnish.
type chain struct {
	db       *gorm.DB
	api      http.Handler // the API behind the response cache
	uncached http.Handler // the same API without it
	varnish  string       // the Varnish's URL
	stop     func()
}

// startChain starts the chain's API server and worker in front of db and rdb (dbURL
// for the worker's replication connection, log for its errors) and a Varnish of the
// harness's (startFront). stop ends them all.
func startChain(ctx context.Context, log *slog.Logger, db *gorm.DB, dbURL string, rdb *redis.Client) (*chain, error) {
	const prefix = "benchv"
	rc, err := readthrough.New(db, rdb, readthrough.Options{Prefix: prefix})
	if err != nil {
		return nil, err
	}
	repo, err := readthrough.Register[Widget](rc, readthrough.ModelOptions{TTL: time.Hour})
	if err != nil {
		return nil, err
	}
	uncached := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(strings.TrimPrefix(r.URL.Path, "/widgets/"), 10, 64)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		wd, ok, err := repo.Get(r.Context(), id)
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case !ok:
			http.NotFound(w, r)
		default:
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write(widgetBody(wd.ID, wd.Stock))
		}
	})
	hc, err := httpcache.New(rdb, httpcache.Options{Prefix: prefix, TagHeader: "xkey"})
	if err != nil {
		return nil, err
	}
	api, err := hc.Wrap(httpcache.Route{SMaxAge: time.Hour}, uncached)
	if err != nil {
		return nil, err
	}
	f, err := startFront(ctx, api)
	if err != nil {
		return nil, err
	}
	w, err := invalidator.NewWorker(rdb, invalidator.WorkerOptions{
		Postgres:    dbURL,
		Stream:      cdc.Options{Slot: "pgcache_bench_varnish", Publication: "pgcache_bench_varnish", Tables: []string{"widgets"}, StatusInterval: time.Second},
		Invalidator: invalidator.Options{Prefix: prefix, Purger: f.purger},
	})
	if err != nil {
		f.close()
		return nil, err
	}
	wr := &workerRun{w: w, log: log}
	wr.start(ctx)
	stop := func() { wr.stop(); f.close() }
	if err := wr.ready(ctx); err != nil {
		stop()
		return nil, err
	}
	return &chain{db: db, api: api, uncached: uncached, varnish: f.url, stop: stop}, nil
}

func widgetBody(id int64, stock int) []byte { return fmt.Appendf(nil, "widget %d stock %d", id, stock) }

// commitToServed, for n widgets from first in turn, has Varnish cache the widget's
// response, commits an UPDATE of its row (raw SQL) and times the commit → Varnish
// serving the new body. The latencies come back sorted.
func (c *chain) commitToServed(ctx context.Context, first int64, n int) ([]time.Duration, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	lat := make([]time.Duration, 0, n)
	for i := range int64(n) {
		id := first + i
		var stock int
		if err := c.db.WithContext(ctx).Raw(`SELECT stock FROM widgets WHERE id = ?`, id).Scan(&stock).Error; err != nil {
			return nil, err
		}
		url := c.varnish + "/widgets/" + strconv.FormatInt(id, 10)
		if _, err := untilServed(ctx, client, url, widgetBody(id, stock), time.Now()); err != nil {
			return nil, err
		}
		if err := c.db.WithContext(ctx).Raw(`UPDATE widgets SET stock = stock + 1 WHERE id = ? RETURNING stock`, id).Scan(&stock).Error; err != nil {
			return nil, err
		}
		committed := time.Now()
		d, err := untilServed(ctx, client, url, widgetBody(id, stock), committed)
		if err != nil {
			return nil, err
		}
		lat = append(lat, d)
	}
	slices.Sort(lat)
	return lat, nil
}

// httpFigures times, in process, n GETs of one widget: served by the response cache
// (hit), by the API without it, and answered 304 by the response cache to a request
// with the ETag. The latencies come back sorted.
func (c *chain) httpFigures(ctx context.Context, id int64, n int) (hit, uncached, notModified []time.Duration, err error) {
	target := "/widgets/" + strconv.FormatInt(id, 10)
	serve := func(h http.Handler, etag string) (*httptest.ResponseRecorder, time.Duration) {
		r := httptest.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if etag != "" {
			r.Header.Set("If-None-Match", etag)
		}
		w := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(w, r)
		return w, time.Since(start)
	}
	first, _ := serve(c.api, "")
	etag := first.Header().Get("Etag")
	if first.Code != http.StatusOK || etag == "" {
		return nil, nil, nil, fmt.Errorf("http: GET %s = %d, ETag %q: want 200 with an ETag", target, first.Code, etag)
	}
	time.Sleep(100 * time.Millisecond) // let the entry's store finish before timing hits
	for range n {
		w, d := serve(c.api, "")
		if w.Header().Get("X-Cache") != "HIT" {
			return nil, nil, nil, fmt.Errorf("http: GET %s not served from the cache: X-Cache %q", target, w.Header().Get("X-Cache"))
		}
		hit = append(hit, d)
		if w, d = serve(c.uncached, ""); w.Code != http.StatusOK {
			return nil, nil, nil, fmt.Errorf("http: GET %s without the cache = %d", target, w.Code)
		}
		uncached = append(uncached, d)
		if w, d = serve(c.api, etag); w.Code != http.StatusNotModified {
			return nil, nil, nil, fmt.Errorf("http: GET %s with If-None-Match %s = %d, want 304", target, etag, w.Code)
		}
		notModified = append(notModified, d)
	}
	slices.Sort(hit)
	slices.Sort(uncached)
	slices.Sort(notModified)
	return hit, uncached, notModified, nil
}

// chainBench fills the results of the whole chain (off with -varnish=false).
func (b *bench) chainBench(ctx context.Context, r *results) error {
	b.log.Info("varnish end to end: commit → new body served")
	c, err := startChain(ctx, b.log, b.db, b.dbURL, b.rdb)
	if err != nil {
		return err
	}
	defer c.stop()
	lat, err := c.commitToServed(ctx, 50_000, chainCommits)
	if err != nil {
		return err
	}
	p50, p99 := ms(percentile(lat, 50)), ms(percentile(lat, 99))
	r.VarnishCommitToServedP50ms, r.VarnishCommitToServedP99ms = &p50, &p99
	hit, uncached, notModified, err := c.httpFigures(ctx, 60_000, 2000)
	if err != nil {
		return err
	}
	h, u, nm := us(percentile(hit, 50)), us(percentile(uncached, 50)), us(percentile(notModified, 50))
	r.HTTPHitP50us, r.HTTPUncachedP50us, r.HTTP304P50us = &h, &u, &nm
	return nil
}
