package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/pgcache/pgcache/readthrough"
)

// missRounds is how many misses missPath times of each kind.
const missRounds = 400

// missPath times a miss that fills (Get of a row whose key was deleted: the read, the
// Postgres query, the fenced fill) against a cache-aside miss of the same row in the
// same run: a plain GET that misses, GORM First, and a SET of the row's JSON. The two
// alternate, so that the machine's load falls on both alike. The keys are deleted
// with raw DELs (as another process's writes would), untimed.
func (b *bench) missPath(ctx context.Context, repo *readthrough.Repository[Widget], r *results) error {
	b.log.Info("miss path")
	var fill, aside []time.Duration
	for i := range missRounds {
		id := int64(i%1000 + 1)
		key, err := repo.Key(id)
		if err != nil {
			return err
		}
		asideKey := "bench:aside:" + fmt.Sprint(id)
		if err := b.rdb.Del(ctx, key, asideKey).Err(); err != nil {
			return err
		}
		start := time.Now()
		if _, ok, err := repo.Get(ctx, id); err != nil || !ok {
			return fmt.Errorf("miss of row %d: %v, %v", id, ok, err)
		}
		fill = append(fill, time.Since(start))

		start = time.Now()
		if err := b.rdb.Get(ctx, asideKey).Err(); err == nil {
			return fmt.Errorf("cache-aside key %s present after its DEL", asideKey)
		}
		var w Widget
		if err := b.db.WithContext(ctx).First(&w, id).Error; err != nil {
			return err
		}
		val, err := json.Marshal(&w)
		if err != nil {
			return err
		}
		if err := b.rdb.Set(ctx, asideKey, val, time.Hour).Err(); err != nil {
			return err
		}
		aside = append(aside, time.Since(start))
	}
	slices.Sort(fill)
	slices.Sort(aside)
	r.MissFillP50us = us(percentile(fill, 50))
	r.CacheAsideMissP50us = us(percentile(aside, 50))
	r.MissVsCacheAsideRatio = r.MissFillP50us / r.CacheAsideMissP50us
	return nil
}
