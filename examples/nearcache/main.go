// Nearcache: a bounded in-process tier in front of Redis, kept coherent by Redis.
//
//	eval "$(scripts/env.sh)" && go run -C examples ./nearcache
//
// Two caches stand for two processes of one service. Each reads a product until it is
// answered in process (no round trip); one of them saves it: its own next read sees the
// new price at once, and the other's near tier drops the row as soon as Redis' message
// reaches it (a fraction of a millisecond on one machine). The near tier can hold rows
// only while Redis reports changes: stats at the end.
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
	"github.com/pgcache/pgcache/readthrough"
)

// Product is the model both processes cache.
type Product struct {
	ID    int64 `gorm:"primaryKey"`
	Name  string
	Price int
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log); err != nil {
		log.Error("nearcache failed", "error", err)
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
	if err := db.Exec(`INSERT INTO products VALUES (1, 'lamp', 100) ON CONFLICT (id) DO UPDATE SET price = 100`).Error; err != nil {
		return err
	}
	a, closeA, err := process(db, redisAddr)
	if err != nil {
		return err
	}
	defer closeA()
	b, closeB, err := process(db, redisAddr)
	if err != nil {
		return err
	}
	defer closeB()

	for _, p := range []*readthrough.Repository[Product]{a, b} {
		if err := untilNear(ctx, p); err != nil {
			return err
		}
	}
	start := time.Now()
	const n = 100_000
	for range n {
		if _, _, err := a.Get(ctx, int64(1)); err != nil {
			return err
		}
	}
	fmt.Printf("1. both processes answer product 1 in process: %d reads took %v each\n", n, time.Since(start)/n)

	p, _, err := a.Get(ctx, int64(1))
	if err != nil {
		return err
	}
	p.Price = 120
	if err := a.Save(ctx, &p); err != nil {
		return err
	}
	if got, _, _ := a.Get(ctx, int64(1)); got.Price != 120 {
		return fmt.Errorf("the writer read %d after its own Save, want 120", got.Price)
	}
	fmt.Println("2. process A saved price 120 and its next read returns 120")

	start = time.Now()
	for {
		got, _, err := b.Get(ctx, int64(1))
		if err != nil {
			return err
		}
		if got.Price == 120 {
			break
		}
		if time.Since(start) > 10*time.Second {
			return errors.New("process B still reads the old price after 10s")
		}
	}
	fmt.Printf("3. process B dropped its copy when Redis told it, and reads 120 (after %v)\n", time.Since(start).Round(time.Microsecond))
	s := b.Stats()
	fmt.Printf("4. process B's near cache: hits %d, misses %d, evictions %d\n", s.NearHits, s.NearMisses, s.NearEvictions)
	return nil
}

// process returns the products repository of a new Cache, standing for another
// process, and the function that closes it (the Cache's tracking connection).
func process(db *gorm.DB, redisAddr string) (*readthrough.Repository[Product], func(), error) {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "nearcache", RedisTimeout: time.Second})
	if err != nil {
		return nil, nil, err
	}
	products, err := readthrough.Register[Product](cache, readthrough.ModelOptions{
		Near: readthrough.NearOptions{MaxEntries: 10_000}, // per process, on top of Redis
	})
	if err != nil {
		return nil, nil, err
	}
	return products, func() { cache.Close(); rdb.Close() }, nil
}

// untilNear reads product 1 until the near tier answers: the tracking connection must
// be up, and the row read from Redis once.
func untilNear(ctx context.Context, p *readthrough.Repository[Product]) error {
	for range 1000 {
		before := p.Stats().NearHits
		if _, _, err := p.Get(ctx, int64(1)); err != nil {
			return err
		}
		if p.Stats().NearHits > before {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return errors.New("the near cache never answered: is Redis 6 or later, and CLIENT TRACKING allowed?")
}
