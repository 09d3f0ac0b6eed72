package readthrough_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/readthrough"
)

type User struct {
	ID    int64 `gorm:"primaryKey"`
	Email string
}

// Register a model once per process, then read it by primary key.
func ExampleRegister() {
	db, err := gorm.Open(postgres.Open("postgres://app@localhost/shop"), &gorm.Config{})
	if err != nil {
		log.Fatal(err)
	}
	// ContextTimeoutEnabled lets RedisTimeout bound a hung Redis.
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379", ContextTimeoutEnabled: true})
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "shop"})
	if err != nil {
		log.Fatal(err)
	}
	users, err := readthrough.Register[User](cache, readthrough.ModelOptions{TTL: 10 * time.Minute})
	if err != nil {
		log.Fatal(err)
	}

	u, ok, err := users.Get(context.Background(), int64(42))
	switch {
	case err != nil:
		log.Fatal(err)
	case !ok:
		fmt.Println("no user 42")
	default:
		fmt.Println(u.Email)
	}
}

// Inside a transaction, read through the transaction: the repository then neither reads
// nor fills the cache.
func ExampleRepository_WithDB() {
	var (
		db    *gorm.DB
		users *readthrough.Repository[User]
		ctx   = context.Background()
	)
	err := db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&User{}).Where("id = ?", 42).Update("email", "new@example.com").Error; err != nil {
			return err
		}
		u, _, err := users.WithDB(tx).Get(ctx, int64(42)) // sees the update
		fmt.Println(u.Email)
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	// After the commit, invalidate (writes through the library will do this for you).
	if err := users.Invalidate(ctx, int64(42)); err != nil {
		log.Fatal(err)
	}
}
