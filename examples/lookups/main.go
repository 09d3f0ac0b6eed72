// Lookups: rows read by a unique column and by a foreign key, cached in Redis and kept
// coherent when any writer changes them.
//
//	eval "$(scripts/env.sh)" && go run -C examples ./lookups
//
// A user is read by email and the items of an order by order id. Raw SQL then moves
// the email to another user and an item to another order, outside the library; the
// invalidation worker (in-process here) deletes the entries the new values name, and
// the check every lookup makes of the rows it returns drops the entries the old values
// name. No read returns a row that no longer matches.
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

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/examples/internal/demo"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/readthrough"
)

// User is read by its unique email.
type User struct {
	ID        int64  `gorm:"primaryKey"`
	Email     string `gorm:"uniqueIndex"`
	Name      string
	DeletedAt gorm.DeletedAt
}

// Item is read by the order it belongs to: a has-many list.
type Item struct {
	ID      int64 `gorm:"primaryKey"`
	OrderID int64 `gorm:"index"`
	SKU     string
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), log); err != nil {
		log.Error("lookups failed", "error", err)
		os.Exit(1)
	}
}

type repos struct {
	users *readthrough.Repository[User]
	items *readthrough.Repository[Item]
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
	r, err := setup(db, rdb, log)
	if err != nil {
		return err
	}
	stopWorker, err := demo.StartWorker(ctx, log, rdb, invalidator.WorkerOptions{
		Postgres:    pgURL,
		Stream:      cdc.Options{Slot: "lookups", Publication: "lookups", Tables: []string{"users", "items"}, StatusInterval: time.Second},
		Invalidator: invalidator.Options{Prefix: "lookups"},
	})
	if err != nil {
		return err
	}
	defer stopWorker()

	for _, step := range []func(context.Context, *gorm.DB, repos) error{byEmail, emailMoved, listOfOrder, itemMoved, softDeleted} {
		if err := step(ctx, db, r); err != nil {
			return err
		}
	}
	fmt.Printf("Stats of users: %+v\nStats of items: %+v\n", r.users.Stats(), r.items.Stats())
	return nil
}

// setup creates the tables, fills them and registers both models with their lookups.
func setup(db *gorm.DB, rdb *redis.Client, log *slog.Logger) (repos, error) {
	if err := db.Migrator().DropTable(&User{}, &Item{}); err != nil {
		return repos{}, err
	}
	if err := db.AutoMigrate(&User{}, &Item{}); err != nil {
		return repos{}, err
	}
	err := errors.Join(
		db.Exec(`INSERT INTO users (id, email, name) SELECT g, 'user' || g || '@example.com', 'user ' || g FROM generate_series(1, 100) g`).Error,
		db.Exec(`INSERT INTO items (id, order_id, sku) SELECT g, (g - 1) / 20 + 1, 'sku-' || g FROM generate_series(1, 200) g`).Error,
	)
	if err != nil {
		return repos{}, err
	}
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: "lookups", Logger: log, RedisTimeout: time.Second})
	if err != nil {
		return repos{}, err
	}
	users, err := readthrough.Register[User](cache, readthrough.ModelOptions{Unique: [][]string{{"Email"}}})
	if err != nil {
		return repos{}, err
	}
	items, err := readthrough.Register[Item](cache, readthrough.ModelOptions{Lists: [][]string{{"OrderID"}}})
	if err != nil {
		return repos{}, err
	}
	return repos{users, items}, nil
}

// byEmail is step 1.
func byEmail(ctx context.Context, _ *gorm.DB, r repos) error {
	fmt.Println("1. A user by email, twice: the first read fills the entry, the second hits it.")
	for range 2 {
		u, ok, err := r.users.By("Email").Get(ctx, "user7@example.com")
		if err != nil || !ok || u.ID != 7 {
			return fmt.Errorf("user7@example.com: %+v, found %t, %v", u, ok, err)
		}
	}
	if u, ok, err := r.users.By("Email").Get(ctx, "user8@example.com"); err != nil || !ok || u.ID != 8 {
		return fmt.Errorf("user8@example.com: %+v, found %t, %v", u, ok, err)
	}
	s := r.users.Stats()
	fmt.Printf("   user7@example.com is user 7; unique lookups: hits %d, misses %d\n\n", s.Unique.Hits, s.Unique.Misses)
	return nil
}

// emailMoved is step 2.
func emailMoved(ctx context.Context, db *gorm.DB, r repos) error {
	fmt.Println("2. Raw SQL gives user 7's email to user 8, outside the library.")
	if err := db.Exec(`UPDATE users SET email = CASE id WHEN 7 THEN 'seven@example.com' ELSE 'user7@example.com' END WHERE id IN (7, 8)`).Error; err != nil {
		return err
	}
	// Until the worker has seen the commit, a read may still be served the old row
	// (the invalidation lag); poll until the new owner shows, then check it stays.
	u, err := eventually(func() (User, bool, error) { return r.users.By("Email").Get(ctx, "user7@example.com") },
		func(u User) bool { return u.ID == 8 })
	if err != nil {
		return err
	}
	old, ok, err := r.users.By("Email").Get(ctx, "seven@example.com")
	if err != nil || !ok || old.ID != 7 {
		return fmt.Errorf("seven@example.com: %+v, found %t, %v", old, ok, err)
	}
	// user8@example.com's entry still names user 8, whose email changed: the worker
	// cannot know the old value (the default replica identity sends only the key), so
	// the lookup checks the row it names, drops the entry and reads again.
	// (How many stale entries the polling above dropped depends on when the worker's
	// deletions came: only this read's are counted.)
	stale := r.users.Stats().Unique.Stale
	if u, ok, err := r.users.By("Email").Get(ctx, "user8@example.com"); err != nil || ok {
		return fmt.Errorf("user8@example.com: %+v, found %t, %v", u, ok, err)
	}
	fmt.Printf("   user7@example.com is now user %d, seven@example.com user %d, user8@example.com nobody; stale entries dropped: %d\n\n",
		u.ID, old.ID, r.users.Stats().Unique.Stale-stale)
	return nil
}

// listOfOrder is step 3.
func listOfOrder(ctx context.Context, _ *gorm.DB, r repos) error {
	fmt.Println("3. The items of order 1, twice: one list entry, then one multi-get of its rows.")
	for range 2 {
		items, err := r.items.ListBy("OrderID").Get(ctx, int64(1))
		if err != nil || len(items) != 20 {
			return fmt.Errorf("order 1: %d items, %v", len(items), err)
		}
	}
	s := r.items.Stats()
	fmt.Printf("   order 1 has 20 items; lists: hits %d, misses %d\n\n", s.List.Hits, s.List.Misses)
	return nil
}

// itemMoved is step 4.
func itemMoved(ctx context.Context, db *gorm.DB, r repos) error {
	fmt.Println("4. Raw SQL moves item 3 to order 2 and adds item 500 to order 1.")
	err := db.Transaction(func(tx *gorm.DB) error {
		return errors.Join(
			tx.Exec(`UPDATE items SET order_id = 2 WHERE id = 3`).Error,
			tx.Exec(`INSERT INTO items (id, order_id, sku) VALUES (500, 1, 'sku-500')`).Error,
		)
	})
	if err != nil {
		return err
	}
	items, err := eventually(func() ([]Item, bool, error) {
		items, err := r.items.ListBy("OrderID").Get(ctx, int64(1))
		return items, true, err
	}, func(items []Item) bool { return len(items) > 0 && items[len(items)-1].ID == 500 })
	if err != nil {
		return err
	}
	for _, it := range items {
		if it.ID == 3 || it.OrderID != 1 {
			return fmt.Errorf("order 1 lists item %d of order %d", it.ID, it.OrderID)
		}
	}
	fmt.Printf("   order 1 now has %d items, item 500 last and item 3 gone\n\n", len(items))
	return nil
}

// softDeleted is step 5.
func softDeleted(ctx context.Context, _ *gorm.DB, r repos) error {
	fmt.Println("5. Deleting user 8 through the library (a soft delete): the lookup no longer finds it.")
	if err := r.users.Delete(ctx, int64(8)); err != nil {
		return err
	}
	if u, ok, err := r.users.By("Email").Get(ctx, "user7@example.com"); err != nil || ok {
		return fmt.Errorf("user7@example.com after the delete: %+v, found %t, %v", u, ok, err)
	}
	fmt.Println("   user7@example.com: not found, at once (read-your-writes)")
	fmt.Println()
	return nil
}

// eventually calls read until accept holds for its result, for at most 10 seconds:
// raw SQL writes reach the cache through the worker, after the invalidation lag.
func eventually[V any](read func() (V, bool, error), accept func(V) bool) (V, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, ok, err := read()
		if err != nil {
			return v, err
		}
		if ok && accept(v) {
			return v, nil
		}
		if time.Now().After(deadline) {
			return v, fmt.Errorf("still %+v 10s after the commit", v)
		}
		time.Sleep(time.Millisecond) // polling the demo's own observation
	}
}
