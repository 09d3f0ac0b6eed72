package invalidator_test

import (
	"context"
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
