package store

import (
	"context"
	"fmt"
)

// ReadStreamEntry returns the entry id of a stream, and false when there is none.
func (s *Store) ReadStreamEntry(ctx context.Context, stream, id string) (StreamEntry, bool, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	msgs, err := s.rdb.XRangeN(ctx, stream, id, id, 1).Result()
	if err != nil {
		return StreamEntry{}, false, fmt.Errorf("store: read %s of %s: %w", id, stream, err)
	}
	if len(msgs) == 0 {
		return StreamEntry{}, false, nil
	}
	e := StreamEntry{ID: msgs[0].ID, Fields: make(map[string]string, len(msgs[0].Values))}
	for k, v := range msgs[0].Values {
		e.Fields[k], _ = v.(string)
	}
	return e, true, nil
}

// DeleteStreamEntries deletes entries of a stream (XDEL) and returns how many existed.
func (s *Store) DeleteStreamEntries(ctx context.Context, stream string, ids ...string) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	n, err := s.rdb.XDel(ctx, stream, ids...).Result()
	if err != nil {
		return 0, fmt.Errorf("store: delete %d entries of %s: %w", len(ids), stream, err)
	}
	return n, nil
}
