package main

import (
	"context"
	"database/sql/driver"
	"fmt"
	"reflect"
	"sync"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"
	"gorm.io/gorm/schema"

	"github.com/pgcache/pgcache/readthrough"
)

// getDecode returns the baseline that issue 16 sets a hit's allocations against: a GET
// of a row's entry and a decode of it into a Widget with the library's default codec
// (readthrough.Binary, what a model gets when ModelOptions sets no Codec), through the
// codec's public API, and nothing else the library does: no key built, no deadline,
// no sharing of GETs, no stats, no scope. A row's entry is one tag byte ('v') and the
// codec's bytes of the row's column record: one value per column GORM maps, in the
// order of the schema's DBNames. Each value is set on a reused row through GORM's field
// setter, as a load sets it. The function it returns keeps its scratch between calls:
// call it from one goroutine.
func getDecode(ctx context.Context, rdb *redis.Client, db *gorm.DB) (func(key string) (Widget, error), error) {
	sch, err := schema.Parse(&Widget{}, &sync.Map{}, db.NamingStrategy)
	if err != nil {
		return nil, err
	}
	var fields []*schema.Field
	for _, name := range sch.DBNames {
		if f := sch.FieldsByDBName[name]; f != nil && f.Readable {
			fields = append(fields, f)
		}
	}
	cols := make([]driver.Value, len(fields))
	row := new(Widget)
	rv := reflect.ValueOf(row).Elem()
	return func(key string) (Widget, error) {
		entry, err := rdb.Get(ctx, key).Bytes()
		if err != nil {
			return Widget{}, err
		}
		if len(entry) == 0 || entry[0] != 'v' {
			return Widget{}, fmt.Errorf("entry of %s starts with %q, not a row's 'v'", key, entry[:min(len(entry), 1)])
		}
		defer clear(cols) // keep no value of the row
		if err := (readthrough.Binary{}).DecodeColumns(entry[1:], cols); err != nil {
			return Widget{}, err
		}
		*row = Widget{}
		for i, f := range fields {
			if err := f.Set(ctx, rv, cols[i]); err != nil {
				return Widget{}, fmt.Errorf("column %s: %w", f.DBName, err)
			}
		}
		return *row, nil
	}, nil
}
