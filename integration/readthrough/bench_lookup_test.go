package readthrough_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/pgcache/pgcache/readthrough"
)

// LineItem is the model of the list benchmarks: 20 rows per order.
type LineItem struct {
	ID          int64 `gorm:"primaryKey"`
	OrderID     int64 `gorm:"index"`
	SKU         string
	Description string
	Quantity    int
	Price       int
}

func listBenchEnv(b *testing.B) (*env, *readthrough.Repository[LineItem]) {
	b.Helper()
	e := newEnv(b)
	if err := e.db.AutoMigrate(&LineItem{}); err != nil {
		b.Fatal(err)
	}
	e.exec(b, `INSERT INTO line_items SELECT g, (g - 1) / 20 + 1, 'sku-' || g, repeat('x', 60), g % 7, g FROM generate_series(1, 2000) g`)
	c := e.cache(b, e.db)
	repo, err := readthrough.Register[LineItem](c, readthrough.ModelOptions{Lists: [][]string{{"OrderID"}}})
	if err != nil {
		b.Fatal(err)
	}
	for range 2 {
		if rows, err := repo.ListBy("OrderID").Get(context.Background(), int64(7)); err != nil || len(rows) != 20 {
			b.Fatal(len(rows), err)
		}
	}
	return e, repo
}

// BenchmarkListHit reads a cached list of 20 rows: the entry, one multi-get, the
// rows decoded and checked. BenchmarkBaselineGormFind is the uncached query.
func BenchmarkListHit(b *testing.B) {
	_, repo := listBenchEnv(b)
	ctx := context.Background()
	list := repo.ListBy("OrderID")
	b.ReportAllocs()
	for b.Loop() {
		if rows, err := list.Get(ctx, int64(7)); err != nil || len(rows) != 20 {
			b.Fatal(len(rows), err)
		}
	}
}

// BenchmarkListMiss invalidates a list of 20 rows and reads it: the miss's round
// trips (two once the model has missed lately, see TestLookupRoundTrips) and the
// query, whose rows the reader takes.
func BenchmarkListMiss(b *testing.B) {
	_, repo := listBenchEnv(b)
	ctx := context.Background()
	list := repo.ListBy("OrderID")
	b.ReportAllocs()
	for b.Loop() {
		if err := list.Invalidate(ctx, int64(7)); err != nil {
			b.Fatal(err)
		}
		if rows, err := list.Get(ctx, int64(7)); err != nil || len(rows) != 20 {
			b.Fatal(len(rows), err)
		}
	}
}

func BenchmarkBaselineGormFind(b *testing.B) {
	e, _ := listBenchEnv(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		var rows []LineItem
		if err := e.db.WithContext(ctx).Where("order_id = ?", 7).Order("id").Find(&rows).Error; err != nil || len(rows) != 20 {
			b.Fatal(len(rows), err)
		}
	}
}

// BenchmarkUniqueGetManyMiss invalidates the entries of 20 emails and reads them with
// one GetMany: their leases (the model misses, so the entries are not read first:
// the leases' round trip would return them), one query and the fills, all for the 20
// together (the rows are the fill's own). It reports the Postgres queries per GetMany.
func BenchmarkUniqueGetManyMiss(b *testing.B) {
	e := newEnv(b)
	if err := e.db.AutoMigrate(&Member{}); err != nil {
		b.Fatal(err)
	}
	e.exec(b, `INSERT INTO members (id, email, name) SELECT g, 'm' || g || '@x', 'M' || g FROM generate_series(1, 1000) g`)
	c, _, queries, _ := countedLookupCache(b, e, "members")
	repo, err := readthrough.Register[Member](c, readthrough.ModelOptions{Unique: [][]string{{"Email"}}})
	if err != nil {
		b.Fatal(err)
	}
	const n = 20
	vals := make([]any, n)
	for i := range vals {
		vals[i] = fmt.Sprintf("m%d@x", 40*i+1)
	}
	ctx := context.Background()
	by := repo.By("Email")
	queries.Store(0)
	b.ReportAllocs()
	for b.Loop() {
		if err := by.Invalidate(ctx, vals...); err != nil {
			b.Fatal(err)
		}
		if rows, err := by.GetMany(ctx, vals...); err != nil || len(rows) != n {
			b.Fatal(len(rows), err)
		}
	}
	b.ReportMetric(float64(queries.Load())/float64(b.N), "queries/op")
}
