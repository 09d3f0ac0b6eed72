package store

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/keys"
)

// Gap records: the invalidator records a table that is about to miss changes (its
// replication slot is being created, or it joins the publication) before the gap
// opens, and clears the record once it has invalidated the table. A worker that dies
// in between finds the record on its next start. They are one hash, keys.Prefix.Gaps,
// field the table as the worker's configuration spells it, value a token unique to
// the recording, so that clearing after a flush never erases a newer record.

// RecordGaps records that tables owe a whole-table invalidation.
func (s *Store) RecordGaps(ctx context.Context, prefix string, tables []string) error {
	if len(tables) == 0 {
		return nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	fields := make([]any, 0, 2*len(tables))
	for _, t := range tables {
		fields = append(fields, t, s.token())
	}
	if err := s.rdb.HSet(ctx, keys.Prefix(prefix).Gaps(), fields...).Err(); err != nil {
		return fmt.Errorf("store: record gaps in %v: %w", tables, err)
	}
	return nil
}

// RecordedGaps returns the recorded tables and their records' tokens.
func (s *Store) RecordedGaps(ctx context.Context, prefix string) (map[string]string, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	m, err := s.rdb.HGetAll(ctx, keys.Prefix(prefix).Gaps()).Result()
	if err != nil {
		return nil, fmt.Errorf("store: read gap records: %w", err)
	}
	return m, nil
}

// clearGapScript deletes each field of KEYS[1] named in ARGV (field, token pairs) only
// if it still holds that token.
var clearGapScript = redis.NewScript(`
for i = 1, #ARGV, 2 do
	if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
		redis.call('HDEL', KEYS[1], ARGV[i])
	end
end
return 0`)

// ClearGaps deletes the records of tables (table → token, as RecordedGaps returned
// them) that were not recorded again since.
func (s *Store) ClearGaps(ctx context.Context, prefix string, records map[string]string) error {
	if len(records) == 0 {
		return nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	args := make([]any, 0, 2*len(records))
	for t, tok := range records {
		args = append(args, t, tok)
	}
	if err := clearGapScript.Run(ctx, s.rdb, []string{keys.Prefix(prefix).Gaps()}, args...).Err(); err != nil {
		return fmt.Errorf("store: clear gap records: %w", err)
	}
	return nil
}
