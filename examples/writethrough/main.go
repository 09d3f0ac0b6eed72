// Writethrough: writes through the cached repository under writepolicy.WriteThrough.
// Save and Delete write Postgres; once the write commits, the row's entry is deleted and
// filled again from Postgres, so the next read, in any process, is a hit with the new
// row. Inside readthrough.Transaction that happens after the commit, and not at all
// after a rollback.
//
//	eval "$(scripts/env.sh)" && go run -C examples ./writethrough
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

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/examples/internal/demo"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

type Wallet struct {
	ID      int64 `gorm:"primaryKey"`
	Owner   string
	Balance int
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log); err != nil {
		log.Error("writethrough failed", "error", err)
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
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	wallets, err := setup(ctx, log, db, rdb)
	if err != nil {
		return err
	}
	w, ok, err := wallets.Get(ctx, 1)
	if err != nil || !ok {
		return fmt.Errorf("wallet 1: found=%v, err=%v", ok, err)
	}

	if err := readYourWrite(ctx, wallets, &w); err != nil {
		return err
	}
	if err := commitThenCache(ctx, db, wallets, &w); err != nil {
		return err
	}
	if err := rollBack(ctx, db, wallets, &w); err != nil {
		return err
	}
	if err := deleteRow(ctx, wallets); err != nil {
		return err
	}
	fmt.Printf("stats: %+v\n", wallets.Stats())
	return nil
}

// setup makes the table with wallet 1 and registers the write-through model.
func setup(ctx context.Context, log *slog.Logger, db *gorm.DB, rdb *redis.Client) (*readthrough.Repository[Wallet], error) {
	if err := db.Migrator().DropTable(&Wallet{}); err != nil {
		return nil, err
	}
	if err := db.AutoMigrate(&Wallet{}); err != nil {
		return nil, err
	}
	if err := db.Create(&Wallet{ID: 1, Owner: "Ada", Balance: 100}).Error; err != nil {
		return nil, err
	}
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "writethrough", Logger: log})
	if err != nil {
		return nil, err
	}
	wallets, err := readthrough.Register[Wallet](cache, readthrough.ModelOptions{WritePolicy: writepolicy.WriteThrough})
	if err != nil {
		return nil, err
	}
	// The table was just made outside the library (and no invalidation worker runs
	// here): drop whatever an earlier run left cached.
	if err := wallets.Invalidate(ctx, 1); err != nil {
		return nil, err
	}
	return wallets, nil
}

// readYourWrite is step 1: Save, then read your own write at once: a hit, refilled from
// Postgres.
func readYourWrite(ctx context.Context, wallets *readthrough.Repository[Wallet], w *Wallet) error {
	w.Balance = 150
	if err := wallets.Save(ctx, w); err != nil {
		return err
	}
	if err := expect(ctx, wallets, 150); err != nil {
		return fmt.Errorf("after Save: %w", err)
	}
	fmt.Println("1. Save(150), then Get: 150, a cache hit")
	return nil
}

// commitThenCache is step 2: in a transaction the cache changes after the commit, not
// before.
func commitThenCache(ctx context.Context, db *gorm.DB, wallets *readthrough.Repository[Wallet], w *Wallet) error {
	err := readthrough.Transaction(ctx, db, func(tx *readthrough.Tx) error {
		w.Balance = 200
		if err := wallets.In(tx).Save(ctx, w); err != nil {
			return err
		}
		// Inside the transaction, reads go to Postgres and see the write...
		if in, _, err := wallets.In(tx).Get(ctx, 1); err != nil || in.Balance != 200 {
			return fmt.Errorf("read inside the transaction: balance %d, err %v; want 200", in.Balance, err)
		}
		// ...while everyone else still reads the committed row from the cache.
		return expect(ctx, wallets, 150)
	})
	if err != nil {
		return fmt.Errorf("committed transaction: %w", err)
	}
	if err := expect(ctx, wallets, 200); err != nil {
		return fmt.Errorf("after the commit: %w", err)
	}
	fmt.Println("2. Save(200) in a transaction: others read 150 until the commit, then 200, a cache hit")
	return nil
}

// rollBack is step 3: a transaction that rolls back leaves the cache (and Postgres) as
// they were.
func rollBack(ctx context.Context, db *gorm.DB, wallets *readthrough.Repository[Wallet], w *Wallet) error {
	errChangedMind := errors.New("changed my mind")
	err := readthrough.Transaction(ctx, db, func(tx *readthrough.Tx) error {
		w.Balance = 999
		if err := wallets.In(tx).Save(ctx, w); err != nil {
			return err
		}
		return errChangedMind // rolls back
	})
	if !errors.Is(err, errChangedMind) {
		return fmt.Errorf("rolled-back transaction returned %v", err)
	}
	if err := expect(ctx, wallets, 200); err != nil {
		return fmt.Errorf("after the rollback: %w", err)
	}
	var inDB Wallet
	if err := db.First(&inDB, 1).Error; err != nil || inDB.Balance != 200 {
		return fmt.Errorf("after the rollback Postgres has balance %d (err %v), want 200", inDB.Balance, err)
	}
	fmt.Println("3. Save(999) in a transaction that rolled back: cache and Postgres still 200")
	return nil
}

// deleteRow is step 4: Delete, and the next read finds no row.
func deleteRow(ctx context.Context, wallets *readthrough.Repository[Wallet]) error {
	if err := wallets.Delete(ctx, 1); err != nil {
		return err
	}
	if _, ok, err := wallets.Get(ctx, 1); err != nil || ok {
		return fmt.Errorf("after Delete: found=%v, err=%v; want no row", ok, err)
	}
	fmt.Println("4. Delete, then Get: no row")
	return nil
}

// expect reads wallet 1 and checks its balance, and that Redis answered.
func expect(ctx context.Context, wallets *readthrough.Repository[Wallet], balance int) error {
	before := wallets.Stats().Hits
	w, ok, err := wallets.Get(ctx, 1)
	switch {
	case err != nil:
		return err
	case !ok || w.Balance != balance:
		return fmt.Errorf("read balance %d (found=%v), want %d", w.Balance, ok, balance)
	case wallets.Stats().Hits != before+1:
		return fmt.Errorf("the read of wallet 1 was not a cache hit: %+v", wallets.Stats())
	}
	return nil
}
