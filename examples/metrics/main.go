// Metrics: a Prometheus /metrics endpoint for a cache, with per-model counters and
// read latencies (package extra/pgcacheprom).
//
//	eval "$(scripts/env.sh)" && go run -C examples ./metrics
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/examples/internal/demo"
	"github.com/pgcache/pgcache/extra/pgcacheprom"
	"github.com/pgcache/pgcache/readthrough"
)

type Product struct {
	ID    int64 `gorm:"primaryKey"`
	Name  string
	Price int
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log); err != nil {
		log.Error("metrics failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	pgURL, redisAddr, stop, err := demo.Servers(ctx, log)
	if err != nil {
		return err
	}
	defer stop()
	db, err := gorm.Open(postgres.Open(pgURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}
	if err := db.AutoMigrate(&Product{}); err != nil {
		return err
	}
	if err := db.Exec(`INSERT INTO products VALUES (1, 'lamp', 30), (2, 'desk', 200) ON CONFLICT DO NOTHING`).Error; err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()

	// The Observer times reads; it must be in the Options before the Cache exists.
	obs := pgcacheprom.NewObserver(pgcacheprom.Options{})
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "metrics", RedisTimeout: time.Second, Observer: obs})
	if err != nil {
		return err
	}
	products, err := readthrough.Register[Product](cache, readthrough.ModelOptions{})
	if err != nil {
		return err
	}
	// The Collector reads the cache's own counters at each scrape.
	reg := prometheus.NewRegistry()
	reg.MustRegister(pgcacheprom.NewCollector(cache, pgcacheprom.Options{}), obs)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		_ = srv.Shutdown(context.WithoutCancel(ctx))
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "error", err)
		}
	}()
	fmt.Printf("serving http://%s/metrics\n", ln.Addr())

	if err := products.Invalidate(ctx, int64(1), int64(2), int64(3)); err != nil {
		return err
	}
	for range 3 {
		for _, id := range []int64{1, 2, 3} { // 3 does not exist: a negative hit after its miss
			if _, _, err := products.Get(ctx, id); err != nil {
				return err
			}
		}
	}
	if err := products.Save(ctx, &Product{ID: 1, Name: "lamp", Price: 35}); err != nil {
		return err
	}

	// What a Prometheus server would scrape.
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		for _, name := range []string{"pgcache_cache_hits_total", "pgcache_cache_negative_hits_total", "pgcache_cache_misses_total",
			"pgcache_cache_fills_total", "pgcache_cache_writes_total", "pgcache_cache_read_duration_seconds_count"} {
			if strings.HasPrefix(line, name+"{") {
				fmt.Println(line)
			}
		}
	}
	return sc.Err()
}
