package readthrough_test

import (
	"context"
	"fmt"
	"log"

	"github.com/pgcache/pgcache/readthrough"
)

type Customer struct {
	ID    int64  `gorm:"primaryKey"`
	Email string `gorm:"uniqueIndex"` // a unique lookup needs a unique index
}

type LineItem struct {
	ID      int64 `gorm:"primaryKey"`
	OrderID int64 `gorm:"index"`
	SKU     string
}

// Register lookups by a unique column and by a foreign key, then read by them: the
// entries hold primary keys, and the rows come through the cached primary-key path,
// checked against the values asked for.
func ExampleRepository_By() {
	var (
		cache *readthrough.Cache // from readthrough.New
		ctx   = context.Background()
	)
	customers, err := readthrough.Register[Customer](cache, readthrough.ModelOptions{
		Unique: [][]string{{"Email"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	lineItems, err := readthrough.Register[LineItem](cache, readthrough.ModelOptions{
		Lists:   [][]string{{"OrderID"}},
		ListCap: 500, // longer lists are read from Postgres, not cached
	})
	if err != nil {
		log.Fatal(err)
	}

	c, ok, err := customers.By("Email").Get(ctx, "ada@example.com")
	if err != nil {
		log.Fatal(err)
	}
	if ok {
		fmt.Println("customer", c.ID)
	}
	items, err := lineItems.ListBy("OrderID").Get(ctx, int64(42)) // ordered by primary key
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(items), "items")
}
