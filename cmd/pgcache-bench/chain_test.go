package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/integration"
)

// TestChainCommitToServed: the end-to-end Varnish measurement against real Postgres,
// Redis and Varnish: every raw UPDATE ends with Varnish serving the row's new body
// through the middleware and the worker's purger (commitToServed fails when one never
// is), and the in-process HTTP figures come back (hits really hits, 304s really 304s).
func TestChainCommitToServed(t *testing.T) {
	pg := integration.NewPostgres(t, integration.PostgresOptions{}).NewDatabase(t)
	rdb := integration.NewRedis(t, integration.RedisOptions{}).Client(t)
	db, err := gorm.Open(postgres.Open(pg.RoleURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.AutoMigrate(&Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(`INSERT INTO widgets SELECT g, 'widget ' || g, 'd', g, 100 FROM generate_series(1, 20) g`).Error; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := startChain(ctx, slog.Default(), db, pg.RoleURL, rdb)
	if err != nil {
		t.Fatal(err)
	}
	defer c.stop()
	const n = 10
	lat, err := c.commitToServed(ctx, 1, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(lat) != n || lat[0] <= 0 || lat[n-1] < lat[0] {
		t.Fatalf("commitToServed = %v, want %d positive latencies, sorted", lat, n)
	}
	var stock int
	if err := db.Raw(`SELECT stock FROM widgets WHERE id = 1`).Scan(&stock).Error; err != nil || stock != 101 {
		t.Fatalf("widget 1 stock %d (%v), want 101: one UPDATE", stock, err)
	}
	hit, uncached, notModified, err := c.httpFigures(ctx, 15, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(hit) != 50 || len(uncached) != 50 || len(notModified) != 50 {
		t.Fatalf("httpFigures: %d, %d, %d latencies, want 50 each", len(hit), len(uncached), len(notModified))
	}
	t.Logf("commit → Varnish serving the new body: p50 %v, p99 %v; http hit p50 %v, uncached p50 %v, 304 p50 %v",
		percentile(lat, 50), percentile(lat, 99), percentile(hit, 50), percentile(uncached, 50), percentile(notModified, 50))
}
