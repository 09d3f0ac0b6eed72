package cluster

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/readthrough"
)

// cachedModel makes T's table in a database of its own, runs seed there, and returns
// the database and T's repository in a cache on the cluster under prefix.
func cachedModel[T any](t *testing.T, rdb *redis.ClusterClient, prefix, seed string, opts readthrough.ModelOptions) (*gorm.DB, *readthrough.Repository[T]) {
	t.Helper()
	pg := servers.Postgres(t).NewDatabase(t)
	db, err := gorm.Open(postgres.Open(pg.RoleURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.AutoMigrate(new(T)); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(seed).Error; err != nil {
		t.Fatal(err)
	}
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := readthrough.Register[T](cache, opts)
	if err != nil {
		t.Fatal(err)
	}
	return db, repo
}
