// GORM plugin: existing GORM code, cached coherently with one db.Use line. db.First by
// primary key is served from Redis; GORM's writes invalidate the rows they touched once
// they commit, so another process reads the new row at once; everything else goes to
// Postgres as before.
//
//	eval "$(scripts/env.sh)" && go run -C examples ./gorm-plugin
//
// It starts Postgres and Redis in containers, or uses PGCACHE_POSTGRES_URL and
// PGCACHE_REDIS_ADDR. It exits 1 if the cache did not behave as it says.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/examples/internal/demo"
	"github.com/pgcache/pgcache/gormcache"
	"github.com/pgcache/pgcache/readthrough"
)

type User struct {
	ID   int64 `gorm:"primaryKey"`
	Name string
	Age  int
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log); err != nil {
		log.Error("gorm-plugin failed", "error", err)
		os.Exit(1)
	}
}

// app is one process of the application: its *gorm.DB, with the plugin installed.
type app struct {
	db     *gorm.DB
	plugin *gormcache.Plugin
	users  *readthrough.Repository[User]
}

func run(ctx context.Context, log *slog.Logger) error {
	pgURL, redisAddr, stop, err := demo.Servers(ctx, log)
	if err != nil {
		return err
	}
	defer stop()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	// Two processes of the same application, sharing Postgres and Redis.
	a, err := open(pgURL, rdb, log)
	if err != nil {
		return err
	}
	b, err := open(pgURL, rdb, log)
	if err != nil {
		return err
	}
	if err := setup(ctx, a); err != nil {
		return err
	}
	for _, step := range []func(context.Context, *app, *app) error{reads, writes, rollback, untouched} {
		if err := step(ctx, a, b); err != nil {
			return err
		}
	}
	return nil
}

// open is what an application adds after gorm.Open: the plugin, its models, db.Use.
func open(pgURL string, rdb *redis.Client, log *slog.Logger) (*app, error) {
	db, err := gorm.Open(postgres.Open(pgURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return nil, err
	}
	// Migrations come first: Register reads the table's primary key from the catalog.
	if err := db.AutoMigrate(&User{}); err != nil {
		return nil, err
	}
	plugin, err := gormcache.New(db, rdb, readthrough.Options{Prefix: "gormplugin", Logger: log})
	if err != nil {
		return nil, err
	}
	users, err := gormcache.Register[User](plugin, readthrough.ModelOptions{TTL: 10 * time.Minute})
	if err != nil {
		return nil, err
	}
	if err := db.Use(plugin); err != nil {
		return nil, err
	}
	return &app{db: db, plugin: plugin, users: users}, nil
}

// setup writes user 1 through GORM (so the cache follows).
func setup(ctx context.Context, a *app) error {
	return a.db.WithContext(ctx).Save(&User{ID: 1, Name: "Ada", Age: 36}).Error
}

// reads: the same db.First calls as before; the second is answered by Redis.
func reads(ctx context.Context, a, _ *app) error {
	for range 2 {
		var u User
		if err := a.db.WithContext(ctx).First(&u, 1).Error; err != nil || u.Name != "Ada" {
			return fmt.Errorf("user 1: got %+v, %v; want Ada", u, err)
		}
	}
	s := a.users.Stats()
	var none User
	err := a.db.WithContext(ctx).First(&none, 404).Error
	fmt.Printf("1. db.First(&u, 1) twice: misses %d, hits %d, database queries %d; user 404: %v\n", s.Misses, s.Hits, s.Loads, err)
	if s.Hits != 1 || s.Loads != 1 || !errors.Is(err, gorm.ErrRecordNotFound) {
		return fmt.Errorf("want the second read served by Redis and ErrRecordNotFound for user 404, got %+v, %v", s, err)
	}
	return nil
}

// writes: process a updates through GORM; process b, which had the row cached, reads
// the new one as soon as the update returned.
func writes(ctx context.Context, a, b *app) error {
	var u User
	if err := b.db.WithContext(ctx).First(&u, 1).Error; err != nil {
		return err
	}
	if err := a.db.WithContext(ctx).Model(&User{ID: 1}).Update("name", "Grace").Error; err != nil {
		return err
	}
	if err := a.db.WithContext(ctx).Model(&User{}).Where("age > ?", 30).Update("age", 37).Error; err != nil {
		return err
	}
	u = User{}
	if err := b.db.WithContext(ctx).First(&u, 1).Error; err != nil {
		return err
	}
	fmt.Printf("2. after process a's updates, process b reads %s, %d\n", u.Name, u.Age)
	if u.Name != "Grace" || u.Age != 37 {
		return fmt.Errorf("process b read %+v after the updates committed", u)
	}
	return nil
}

// rollback: a transaction's writes invalidate nothing until it commits, and nothing if
// it rolls back.
func rollback(ctx context.Context, a, b *app) error {
	errAbort := errors.New("abort")
	err := a.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Delete(&User{}, 1).Error; err != nil {
			return err
		}
		return errAbort
	})
	if !errors.Is(err, errAbort) {
		return err
	}
	var u User
	if err := b.db.WithContext(ctx).First(&u, 1).Error; err != nil {
		return err
	}
	fmt.Printf("3. after a rolled-back delete, process b reads %s (invalidated rows: %d)\n", u.Name, a.plugin.Stats().Invalidated)
	if u.Name != "Grace" {
		return fmt.Errorf("process b read %+v after a rollback", u)
	}
	return nil
}

// untouched: queries the plugin cannot prove are lookups by key go to Postgres as
// before.
func untouched(ctx context.Context, a, _ *app) error {
	var names []string
	before := a.plugin.Stats()
	if err := a.db.WithContext(ctx).Model(&User{}).Where("age > ?", 30).Pluck("name", &names).Error; err != nil {
		return err
	}
	var u User
	if err := a.db.WithContext(ctx).Select("name").First(&u, 1).Error; err != nil {
		return err
	}
	after := a.plugin.Stats()
	fmt.Printf("4. Pluck and Select went to Postgres: served %d, passed %d\n", after.Served-before.Served, after.Passed-before.Passed)
	if after.Served != before.Served || after.Passed != before.Passed+2 {
		return fmt.Errorf("want both queries passed to Postgres, stats before %+v after %+v", before, after)
	}
	return nil
}
