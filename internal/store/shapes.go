package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/keys"
)

// The shape registry (keys.Prefix.Shapes) describes the cached entries of each schema
// version: the codec of their column record and the record's columns, in order. The
// application knows them from its Go model; a process without that type (the worker's
// coherence auditor) reads them here to decode entries and compare them with Postgres.
// Nothing on the read or invalidation path depends on it: a shape is announced with a
// lease at most once per shapeEvery per model (so it comes back within that long after
// a Redis restart lost it), and a reader that finds no shape for a version skips its
// entries.

// shapeEvery is how often a model announces its shape, at most.
const shapeEvery = time.Minute

// Shape describes the entries of a schema version of a table.
type Shape struct {
	// Codec is the name of the codec of the column record (readthrough.Codec.Name).
	Codec string `json:"codec"`
	// Columns are the record's columns, in the record's order.
	Columns []string `json:"columns"`
	// Key are the primary-key columns in the order the row key holds their values
	// (keys.Order).
	Key []string `json:"key"`
}

// shape is a Model's announced shape: its registry field and encoded value, and when
// it is next due (Unix ms), shared by the Model's copies.
type shape struct {
	key, field, value string
	due               *atomic.Int64
}

// WithShape returns m announcing sh as the shape of the entries of schema version
// version of its table (the version in the entries' envelope for write-back models,
// whose keys all versions share; the space's version otherwise).
func (m Model) WithShape(version string, sh Shape) (Model, error) {
	space, err := keys.NewSpace(m.space.Prefix(), m.space.Table(), version)
	if err != nil {
		return m, err
	}
	b, err := json.Marshal(sh)
	if err != nil {
		return m, err
	}
	m.shape = &shape{key: keys.Prefix(m.space.Prefix()).Shapes(), field: space.RegistryField(), value: string(b),
		due: new(atomic.Int64)}
	return m, nil
}

// announceShape adds the shape's HSET to p when it is due. Its outcome is not
// checked: the shape registry is a convenience of the auditor, never of coherence.
func (m Model) announceShape(ctx context.Context, p redis.Pipeliner) {
	sh := m.shape
	if sh == nil {
		return
	}
	now := time.Now().UnixMilli()
	due := sh.due.Load()
	if now < due || !sh.due.CompareAndSwap(due, now+shapeEvery.Milliseconds()) {
		return
	}
	p.HSet(ctx, sh.key, sh.field, sh.value)
}

// Shapes returns the shape registry of prefix, by registry field ("<table>|<version>",
// see keys.ParseRegistryField). Values that do not parse are skipped.
func (s *Store) Shapes(ctx context.Context, prefix string) (map[string]Shape, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	key := keys.Prefix(prefix).Shapes()
	all, err := s.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("store: read shapes %s: %w", key, err)
	}
	out := make(map[string]Shape, len(all))
	for f, v := range all {
		var sh Shape
		if json.Unmarshal([]byte(v), &sh) == nil && len(sh.Columns) > 0 {
			out[f] = sh
		}
	}
	return out, nil
}

// SampleIndex returns up to count value keys picked at random from a table's index
// (keys.Space.TableIndex): rows and lookup entries leased or filled within their
// lifetime, present or not.
func (s *Store) SampleIndex(ctx context.Context, index string, count int) ([]string, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	ks, err := s.rdb.ZRandMember(ctx, index, count).Result()
	if err != nil && err != redis.Nil {
		return nil, fmt.Errorf("store: sample %s: %w", index, err)
	}
	return ks, nil
}

// Cached is a row's cache state as ReadCached saw it.
type Cached struct {
	// Value is the entry at the value key; Found is false when there is none.
	Value []byte
	Found bool
	// Pending is true when the row has a pending write-back record.
	Pending bool
}

// ReadCached reads a row's value and whether it has a pending write-back record, in
// one round trip (the keys share a hash slot).
func (s *Store) ReadCached(ctx context.Context, k keys.Key) (Cached, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var get *redis.StringCmd
	var pending *redis.IntCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, k.Value())
		pending = p.Exists(ctx, k.Pending())
		return nil
	})
	if err != nil && err != redis.Nil {
		return Cached{}, fmt.Errorf("store: read %s: %w", k, err)
	}
	b, gerr := get.Bytes()
	return Cached{Value: b, Found: gerr == nil, Pending: pending.Val() > 0}, nil
}
