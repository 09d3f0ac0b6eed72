package invalidator

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/keys"
)

// The Invalidator records gaps in Redis before they open, so a worker that dies after
// creating its slot and before flushing the tables flushes them when it starts again.
var _ cdc.GapRecorder = (*Invalidator)(nil)

// Gap invalidates every cached row of the tables, under every version: the change stream
// may have missed changes to them. tables are named schema.name, as cdc.Handler's Gap
// says; a name without a schema (recorded by an older version) is taken to be in
// "public". It then clears the tables' gap records
// (RecordGap), unless they were recorded again meanwhile.
func (v *Invalidator) Gap(ctx context.Context, tables []string, reason string) error {
	v.log.Warn("change stream has a gap; invalidating whole tables", slog.String("reason", reason), slog.Any("tables", tables))
	// The records to clear are those that exist before the flush begins.
	var records map[string]string
	err := v.retry(ctx, func(ctx context.Context) (err error) {
		records, err = v.store.RecordedGaps(ctx, v.prefix)
		return err
	})
	if err != nil {
		return fmt.Errorf("invalidator: gap: %w", err)
	}
	clear := make(map[string]string)
	for _, spec := range tables {
		schema, name, ok := strings.Cut(spec, ".")
		if !ok {
			schema, name = "public", spec
		}
		sp, err := keys.NewSpace(v.prefix, keys.QualifiedTable(schema, name), "any")
		if err != nil {
			return fmt.Errorf("invalidator: gap in %s: %w", spec, err)
		}
		// Every version shares the table's index, so any version names it.
		if err := v.flushTable(ctx, sp); err != nil {
			return fmt.Errorf("invalidator: gap in %s: %w", spec, err)
		}
		if tok, ok := records[spec]; ok {
			clear[spec] = tok
		}
	}
	err = v.retry(ctx, func(ctx context.Context) error { return v.store.ClearGaps(ctx, v.prefix, clear) })
	if err != nil {
		return fmt.Errorf("invalidator: gap: %w", err)
	}
	return nil
}

// RecordGap records in Redis that tables owe a Gap call (cdc.GapRecorder): the stream
// calls it before creating its slot or adding tables to its publication.
func (v *Invalidator) RecordGap(ctx context.Context, tables []string, reason string) error {
	err := v.retry(ctx, func(ctx context.Context) error { return v.store.RecordGaps(ctx, v.prefix, tables) })
	if err != nil {
		return fmt.Errorf("invalidator: record gap (%s): %w", reason, err)
	}
	return nil
}

// RecordedGap returns the tables whose recorded gap no Gap call has cleared yet
// (cdc.GapRecorder).
func (v *Invalidator) RecordedGap(ctx context.Context) ([]string, error) {
	var records map[string]string
	err := v.retry(ctx, func(ctx context.Context) (err error) {
		records, err = v.store.RecordedGaps(ctx, v.prefix)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("invalidator: read gap records: %w", err)
	}
	tables := make([]string, 0, len(records))
	for t := range records {
		tables = append(tables, t)
	}
	slices.Sort(tables)
	return tables, nil
}
