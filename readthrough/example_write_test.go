package readthrough_test

import (
	"context"
	"log"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writeback"
	"github.com/pgcache/pgcache/writepolicy"
)

// Writes inside a transaction: their cache effects run once it commits, and not at
// all if it rolls back.
func ExampleTransaction() {
	var (
		db    *gorm.DB
		users *readthrough.Repository[User]
		ctx   = context.Background()
	)
	err := readthrough.Transaction(ctx, db, func(tx *readthrough.Tx) error {
		u, _, err := users.In(tx).Get(ctx, int64(42)) // from Postgres, inside the transaction
		if err != nil {
			return err
		}
		u.Email = "new@example.com"
		if err := users.In(tx).Save(ctx, &u); err != nil {
			return err
		}
		// Plain GORM in the same transaction:
		return tx.DB().Exec(`UPDATE audit_counts SET n = n + 1`).Error
	})
	if err != nil {
		log.Fatal(err)
	}
}

// A transaction begun and committed by someone else (a middleware, say) joins with
// WrapTx; AfterCommit runs the cache effects once it committed.
func ExampleWrapTx() {
	var (
		db    *gorm.DB
		users *readthrough.Repository[User]
		ctx   = context.Background()
	)
	gtx := db.Begin()
	tx := readthrough.WrapTx(gtx)
	if err := users.In(tx).Delete(ctx, int64(42)); err != nil {
		gtx.Rollback()
		log.Fatal(err)
	}
	if err := gtx.Commit().Error; err != nil {
		log.Fatal(err)
	}
	tx.AfterCommit(ctx)
}

// Write-back: Save returns once the write is durable in Redis; a flusher, here in the
// application, applies it to Postgres.
func Example_writeBack() {
	var (
		db  *gorm.DB
		rdb *redis.Client
		ctx = context.Background()
	)
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "shop"})
	if err != nil {
		log.Fatal(err)
	}
	users, err := readthrough.Register[User](cache, readthrough.ModelOptions{
		WritePolicy: writepolicy.WriteBack,
		WriteBack:   writeback.WriteOptions{WaitAOF: true}, // Redis 7.2+: fsynced before Save returns
	})
	if err != nil {
		log.Fatal(err)
	}
	// The flusher's Prefix is the cache's.
	flusher, err := writeback.NewFlusher(db, rdb, writeback.FlusherOptions{Prefix: "shop", BatchSize: 500})
	if err != nil {
		log.Fatal(err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return flusher.Run(ctx) })

	if err := users.Save(ctx, &User{ID: 42, Email: "a@example.com"}); err != nil {
		log.Fatal(err) // Redis down: nothing was written
	}
	// Every reader now sees the write, before and after it reaches Postgres.
	if err := g.Wait(); err != nil {
		log.Fatal(err)
	}
}
