package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/pgcache/pgcache/readthrough"
)

// Member is read by its unique email.
type Member struct {
	ID    int64  `gorm:"primaryKey"`
	Email string `gorm:"uniqueIndex"`
	Name  string
	Plan  string
}

// LineItem is read by its order: lists of 20.
type LineItem struct {
	ID          int64 `gorm:"primaryKey"`
	OrderID     int64 `gorm:"index"`
	SKU         string
	Description string
	Quantity    int
	Price       int
}

const (
	members   = 10_000
	orders    = 1_000
	perOrder  = 20
	hotOrders = 200
)

// lookups measures a unique lookup's hit against the two raw GETs it makes (the
// entry, then the row), and a hit of a 20-row list against GORM's Where(...).Find of
// the same rows.
func (b *bench) lookups(ctx context.Context, r *results) error {
	b.log.Info("lookups")
	users, items, err := b.lookupRepos()
	if err != nil {
		return err
	}
	email := func(i int) string { return "member" + strconv.Itoa(i%members+1) + "@example.com" }
	raw, err := b.warmLookups(ctx, users, items, email)
	if err != nil {
		return err
	}
	twoGets := func(i int) error {
		k := raw[i%members]
		if err := b.rdb.Get(ctx, k[0]).Err(); err != nil {
			return err
		}
		return b.rdb.Get(ctx, k[1]).Err()
	}
	unique := func(i int) error {
		_, ok, err := users.By("Email").Get(ctx, email(i))
		if err == nil && !ok {
			err = fmt.Errorf("account %s missing", email(i))
		}
		return err
	}
	list := func(i int) error {
		got, err := items.ListBy("OrderID").Get(ctx, int64(i%hotOrders+1))
		if err == nil && len(got) != perOrder {
			err = fmt.Errorf("order %d: %d items", i%hotOrders+1, len(got))
		}
		return err
	}
	find := func(i int) error {
		var got []LineItem
		return b.db.WithContext(ctx).Where("order_id = ?", int64(i%hotOrders+1)).Order("id").Find(&got).Error
	}
	err = b.sideBySide(ctx, []measure{
		{twoGets, &r.TwoRawGetsP50us, nil},
		{unique, &r.UniqueHitP50us, nil},
		{list, &r.ListHit20P50us, &r.ListHit20OpsS16},
		{find, &r.GormFindListP50us, &r.GormFindListOpsS16},
	})
	if err != nil {
		return err
	}
	r.UniqueHitRatio = r.UniqueHitP50us / r.TwoRawGetsP50us
	r.ListHitVsFindOpsRatio16 = r.ListHit20OpsS16 / r.GormFindListOpsS16
	return b.nearList(ctx, r)
}

// nearList measures the same list hits with the model's near cache on: the entry and
// its members answered in process.
func (b *bench) nearList(ctx context.Context, r *results) error {
	c, err := readthrough.New(b.db, b.rdb, readthrough.Options{Prefix: "bench"})
	if err != nil {
		return err
	}
	defer c.Close()
	items, err := readthrough.Register[LineItem](c, readthrough.ModelOptions{Lists: [][]string{{"OrderID"}},
		Near: readthrough.NearOptions{MaxEntries: 100_000}})
	if err != nil {
		return err
	}
	list := func(i int) error {
		got, err := items.ListBy("OrderID").Get(ctx, int64(i%hotOrders+1))
		if err == nil && len(got) != perOrder {
			err = fmt.Errorf("order %d: %d items", i%hotOrders+1, len(got))
		}
		return err
	}
	// Until the hot lists are answered in process (tracking up, each read from Redis once).
	for deadline := time.Now().Add(10 * time.Second); ; {
		before := items.Stats().NearHits
		for o := range hotOrders {
			if err := list(o); err != nil {
				return err
			}
		}
		if items.Stats().NearHits-before == hotOrders*(perOrder+1) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("near cache: the hot lists are not answered in process after 10s")
		}
	}
	lat, err := b.latencies(ctx, list)
	if err != nil {
		return err
	}
	r.ListHit20NearP50us = us(percentile(lat, 50))
	if r.ListHit20NearOpsS16, err = b.opsPerSec(ctx, 16, list); err != nil {
		return err
	}
	r.ListHitNearVsFindOpsRatio16 = r.ListHit20NearOpsS16 / r.GormFindListOpsS16
	return nil
}

// warmLookups caches every member's entry and row and the hot orders' lists and rows,
// and returns the keys the raw baseline reads for each member: its entry's and its
// row's.
func (b *bench) warmLookups(ctx context.Context, users *readthrough.Repository[Member], items *readthrough.Repository[LineItem], email func(int) string) ([][2]string, error) {
	raw := make([][2]string, members)
	for i := range members {
		var err error
		if raw[i][0], err = users.By("Email").Key(email(i)); err != nil {
			return nil, err
		}
		// A miss answers from its own load, and the next read caches the row; on a
		// loaded machine a fill may give up (a Redis timeout, a lease wait past its
		// bound), so the reads go on until both keys are cached: the raw GETs measured
		// against them must hit.
		for try := 0; ; try++ {
			a, ok, err := users.By("Email").Get(ctx, email(i))
			if err != nil || !ok {
				return nil, fmt.Errorf("member %s: found %t, %w", email(i), ok, err)
			}
			if raw[i][1], err = users.Key(a.ID); err != nil {
				return nil, err
			}
			n, err := b.rdb.Exists(ctx, raw[i][0], raw[i][1]).Result()
			if err != nil {
				return nil, err
			}
			if n == 2 {
				break
			}
			if try == 10 {
				return nil, fmt.Errorf("member %s: entry and row not cached after %d reads", email(i), try+1)
			}
		}
	}
	for range 2 {
		for o := range hotOrders {
			if _, err := items.ListBy("OrderID").Get(ctx, int64(o+1)); err != nil {
				return nil, err
			}
		}
	}
	return raw, nil
}

// lookupRepos creates and fills the members and line items and registers both.
func (b *bench) lookupRepos() (*readthrough.Repository[Member], *readthrough.Repository[LineItem], error) {
	if err := b.db.Migrator().DropTable(&Member{}, &LineItem{}); err != nil {
		return nil, nil, err
	}
	if err := b.db.AutoMigrate(&Member{}, &LineItem{}); err != nil {
		return nil, nil, err
	}
	if err := b.db.Exec(`INSERT INTO members SELECT g, 'member' || g || '@example.com', 'member ' || g, 'pro' FROM generate_series(1, ?) g`, members).Error; err != nil {
		return nil, nil, err
	}
	if err := b.db.Exec(`INSERT INTO line_items SELECT g, (g - 1) / ? + 1, 'sku-' || g, repeat('x', 60), g % 7, g FROM generate_series(1, ?) g`, perOrder, orders*perOrder).Error; err != nil {
		return nil, nil, err
	}
	c, err := readthrough.New(b.db, b.rdb, readthrough.Options{Prefix: "bench"})
	if err != nil {
		return nil, nil, err
	}
	users, err := readthrough.Register[Member](c, readthrough.ModelOptions{Unique: [][]string{{"Email"}}})
	if err != nil {
		return nil, nil, err
	}
	items, err := readthrough.Register[LineItem](c, readthrough.ModelOptions{Lists: [][]string{{"OrderID"}}})
	if err != nil {
		return nil, nil, err
	}
	return users, items, nil
}
