package readthrough

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"reflect"
	"time"

	"gorm.io/gorm/schema"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/writeback"
)

// saveBack journals a write-back Create or Save (see package writeback).
func (r *Repository[T]) saveBack(ctx context.Context, row *T, o op) error {
	if r.inTx {
		return fmt.Errorf("%w: %s %s", ErrWriteBackInTx, o, r.model.schema.Name)
	}
	rv := reflect.ValueOf(row).Elem()
	for _, f := range r.model.pk {
		if _, zero := f.ValueOf(ctx, rv); zero {
			return fmt.Errorf("%w: %s %s: %s is zero", ErrZeroKey, o, r.model.schema.Name, f.Name)
		}
	}
	if err := r.model.stampTimes(ctx, rv, r.base.NowFunc()); err != nil {
		return fmt.Errorf("readthrough: %s %s: %w", o, r.model.schema.Name, err)
	}
	k, err := r.model.rowKey(ctx, rv)
	if err != nil {
		return err
	}
	change, err := r.model.upsert(ctx, rv)
	if err != nil {
		return fmt.Errorf("readthrough: write-back %s %s: %w", o, r.model.schema.Name, err)
	}
	entry, err := r.encode(ctx, row, true)
	if err != nil {
		// The entry is the row until the flush: it must be exact.
		return fmt.Errorf("%w (write-back keeps the row in Redis until it is flushed, so it must be cached exactly: fix the field's Value/Scan pair or use another write policy)", err)
	}
	ttl, _ := r.ttl(entry)
	return r.journaled(o, r.journal.Write(ctx, k, r.seal(entry), ttl, change))
}

// deleteBack journals a write-back Delete: the pending record is a tombstone, so reads
// find no row.
func (r *Repository[T]) deleteBack(ctx context.Context, k keys.Key, id any) error {
	if r.inTx {
		return fmt.Errorf("%w: delete %s", ErrWriteBackInTx, r.model.schema.Name)
	}
	if !r.unscoped() {
		return r.softDeleteBack(ctx, k, id)
	}
	vals, err := r.idValues(id)
	if err != nil {
		return err
	}
	change := writeback.Change{Schema: r.model.pgSchema, Table: r.model.pgTable, Key: r.model.pkNamesList,
		Columns: r.model.pkNamesList, Values: make([]any, len(vals)), Delete: true}
	for i, v := range vals {
		if change.Values[i], err = driverValue(v); err != nil {
			return fmt.Errorf("readthrough: write-back delete %s %v: column %s: %w", r.model.schema.Name, id, r.model.pk[i].DBName, err)
		}
	}
	ttl := time.Duration(0) // no negative caching: the pending tombstone answers reads
	if r.opts.NegativeTTL > 0 {
		ttl = r.opts.NegativeTTL
	}
	return r.journaled(opDelete, r.journal.Write(ctx, k, r.seal([]byte{entryAbsent}), ttl, change))
}

// journaled counts a write-back write that was journaled (err nil) or failed, and
// names the write in the error.
func (r *Repository[T]) journaled(o op, err error) error {
	switch {
	case err == nil:
		r.stats.writes.Add(1)
		return nil
	case errors.Is(err, writeback.ErrBadChange), errors.Is(err, ErrOtherVersionPending):
		return fmt.Errorf("readthrough: write-back %s %s: %w", o, r.model.schema.Name, err)
	}
	r.stats.errors.Add(1)
	step := "journal"
	if errors.Is(err, store.ErrNotDurable) {
		step = "journaled, but not confirmed durable (it may still be applied)"
	}
	return fmt.Errorf("readthrough: write-back %s %s: %s: %w", o, r.model.schema.Name, step, err)
}

// upsert returns the write-back change writing row rv whole.
func (m *model) upsert(ctx context.Context, rv reflect.Value) (writeback.Change, error) {
	c := writeback.Change{Schema: m.pgSchema, Table: m.pgTable, Key: m.pkNamesList, Columns: m.writeNames,
		Update: m.updateNames, Values: make([]any, len(m.writeCols))}
	for i, f := range m.writeCols {
		v, _ := f.ValueOf(ctx, rv)
		dv, err := driverValue(v)
		if err != nil {
			return c, fmt.Errorf("column %s: %w", f.DBName, err)
		}
		c.Values[i] = dv
	}
	return c, nil
}

// driverValue converts a field's value the way database/sql does before it reaches
// the driver (driver.Valuer, pointers, named basic types).
func driverValue(v any) (any, error) {
	dv, err := driver.DefaultParameterConverter.ConvertValue(v)
	if err != nil {
		return nil, fmt.Errorf("%w (write-back journals driver values: give the type a driver.Valuer, or use another write policy)", err)
	}
	return dv, nil
}

// stampTimes sets the autoCreateTime fields that are zero and the autoUpdateTime
// fields, as GORM's Save does, so the journaled row and the cached one carry them.
func (m *model) stampTimes(ctx context.Context, rv reflect.Value, now time.Time) error {
	for _, f := range m.autoTime {
		unit := f.AutoUpdateTime
		if unit == 0 {
			if _, zero := f.ValueOf(ctx, rv); !zero {
				continue
			}
			unit = f.AutoCreateTime
		}
		var v any = now
		switch unit {
		case schema.UnixSecond:
			v = now.Unix()
		case schema.UnixMillisecond:
			v = now.UnixMilli()
		case schema.UnixNanosecond:
			v = now.UnixNano()
		}
		if err := f.Set(ctx, rv, v); err != nil {
			return fmt.Errorf("set %s: %w", f.Name, err)
		}
	}
	return nil
}
