package invalidator_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/internal/testhooks"
	"github.com/pgcache/pgcache/invalidator"
)

// slowDel is a go-redis hook that delays every DEL, so that delete pipelines stay in
// flight long enough to be seen.
type slowDel time.Duration

func (d slowDel) DialHook(next redis.DialHook) redis.DialHook { return next }
func (d slowDel) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "del" {
			time.Sleep(time.Duration(d))
		}
		return next(ctx, cmd)
	}
}
func (d slowDel) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// checkOnReturn is the Invalidator as a cdc.BatchHandler that counts, each time
// HandleBatch returns nil, how many of the watched keys are still in Redis.
type checkOnReturn struct {
	*invalidator.Invalidator
	rdb      redis.UniversalClient
	watched  []string
	hooks    *testhooks.Deletes
	returned atomic.Int64
	left     atomic.Int64
}

func (c *checkOnReturn) Handle(ctx context.Context, tx *cdc.Tx) error {
	return c.HandleBatch(ctx, []*cdc.Tx{tx})
}

func (c *checkOnReturn) HandleBatch(ctx context.Context, txs []*cdc.Tx) error {
	if err := c.Invalidator.HandleBatch(testhooks.WithDeletes(ctx, c.hooks), txs); err != nil {
		return err
	}
	n, err := c.rdb.Exists(context.WithoutCancel(ctx), c.watched...).Result()
	if err != nil {
		return err
	}
	c.left.Add(n)
	c.returned.Add(1)
	return nil
}

// deletesLeftOnReturn commits one UPDATE of rows rows, the first row of each delete
// pipeline cached, into an Invalidator whose DELs each take 20ms, and returns how many
// of those rows were still cached when HandleBatch returned.
func deletesLeftOnReturn(t *testing.T, hooks *testhooks.Deletes) int64 {
	const rows, per = 6000, 1000 // six pipelines, more than go at once
	e := newEnvOn(t, servers.Postgres(t).NewDatabase(t), servers.Redis(t), rows)
	slow := redis.NewClient(e.Redis.Options())
	slow.AddHook(slowDel(20 * time.Millisecond))
	t.Cleanup(func() { slow.Close() })
	inv, err := invalidator.New(slow, invalidator.Options{Prefix: e.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	h := &checkOnReturn{Invalidator: inv, rdb: e.Redis, hooks: hooks}
	runStream(t, e.PG.RoleURL, faultOptions(e.slot), h) // first, as its gap flushes the table
	for id := int64(1); id <= rows; id += per {
		e.Fill(t, id, id+per-1)
		for _, k := range []int64{id, id + per - 1} {
			key, err := e.Repo.Key(k)
			if err != nil {
				t.Fatal(err)
			}
			h.watched = append(h.watched, key)
		}
	}
	e.Exec(t, `UPDATE widgets SET name = 'changed'`)
	integration.Eventually(t, "the transaction to be handled", func() bool { return h.returned.Load() >= 1 })
	return h.left.Load()
}

// TestDeletesBeforeAck: a large transaction's keys are deleted by several pipelines at
// once, and HandleBatch returns (the stream then confirms the transaction) only once
// every one of them is done: no changed row is still cached then.
func TestDeletesBeforeAck(t *testing.T) {
	t.Parallel()
	if left := deletesLeftOnReturn(t, nil); left != 0 {
		t.Errorf("%d changed rows still cached when HandleBatch returned", left)
	}
}

// TestDeletesBeforeAckControl: with the pipelines in flight not waited for
// (testhooks.Deletes.Unwaited), the check of TestDeletesBeforeAck fails.
func TestDeletesBeforeAckControl(t *testing.T) {
	t.Parallel()
	if left := deletesLeftOnReturn(t, &testhooks.Deletes{Unwaited: true}); left == 0 {
		t.Error("every changed row was gone when HandleBatch returned without waiting for its pipelines; the test cannot fail")
	}
}

// roundTrips is a go-redis hook that counts the commands and pipelines sent.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmd)
	}
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
}

// batchTrips is the Invalidator as a cdc.BatchHandler that records the round trips
// to Redis of each HandleBatch (its client is used by nothing else).
type batchTrips struct {
	*invalidator.Invalidator
	trips *roundTrips
	mu    sync.Mutex
	seen  []int64
}

func (b *batchTrips) Handle(ctx context.Context, tx *cdc.Tx) error {
	return b.HandleBatch(ctx, []*cdc.Tx{tx})
}

func (b *batchTrips) HandleBatch(ctx context.Context, txs []*cdc.Tx) error {
	before := b.trips.n.Load()
	err := b.Invalidator.HandleBatch(ctx, txs)
	b.mu.Lock()
	b.seen = append(b.seen, b.trips.n.Load()-before)
	b.mu.Unlock()
	return err
}

func (b *batchTrips) batches() []int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.seen)
}

// TestSmallTransactionOneRoundTrip: once the invalidator knows the versions cached, a
// transaction of a few rows costs one round trip to Redis: the registries' read (which
// must follow the commit) rides in the pipeline that deletes the rows' keys. The key
// is gone when HandleBatch returns. (With the read and the deletes sent apart, as
// before, it took two.)
func TestSmallTransactionOneRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnvOn(t, servers.Postgres(t).NewDatabase(t), servers.Redis(t), 10)
	trips := new(roundTrips)
	counted := redis.NewClient(e.Redis.Options())
	counted.AddHook(trips)
	t.Cleanup(func() { counted.Close() })
	inv, err := invalidator.New(counted, invalidator.Options{Prefix: e.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	h := &batchTrips{Invalidator: inv, trips: trips}
	runStream(t, e.PG.RoleURL, faultOptions(e.slot), h) // first, as its gap flushes the table
	e.Fill(t, 1, 10)
	// The first transaction teaches the invalidator the version.
	e.Exec(t, `UPDATE widgets SET name = 'first' WHERE id = 1`)
	integration.Eventually(t, "the first transaction to be handled", func() bool { return len(h.batches()) >= 1 })
	handled := len(h.batches())

	e.Exec(t, `UPDATE widgets SET name = 'second' WHERE id IN (2, 3)`)
	integration.Eventually(t, "the second transaction to be handled", func() bool { return len(h.batches()) > handled })
	if got := h.batches()[handled:]; !slices.Equal(got, []int64{1}) {
		t.Errorf("round trips of the batches after the version was known: %v; want [1]", got)
	}
	for _, id := range []int64{2, 3} {
		key, err := e.Repo.Key(id)
		if err != nil {
			t.Fatal(err)
		}
		if n := e.Redis.Exists(context.Background(), key).Val(); n != 0 {
			t.Errorf("row %d still cached after its transaction was handled", id)
		}
	}
}
