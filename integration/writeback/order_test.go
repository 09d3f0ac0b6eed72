package writeback_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/writeback"
)

// TestClearBeforeAck: a flush on a single Redis clears its batch's pending records
// and acknowledges its journal entries in one pipeline (a script per 100 rows, then
// one per stream). Redis runs a pipeline's commands in order, so every clear must be
// queued before any acknowledgement: a flusher that dies between them must leave an
// entry to apply again, never a pending record whose entry is gone. The crash tests
// stop a flush between the two steps only through a hook that takes the split path,
// so this test reads the order off the wire. Redis' scripts are flushed just before
// that pipeline is sent (on a Redis of the test's own): every command in it fails with
// NOSCRIPT, the pipeline is sent again once the scripts are loaded, and the flush
// ends as any other (each write applied once, no pending record, nothing left in the
// journal).
func TestClearBeforeAck(t *testing.T) {
	t.Parallel()
	e := newEnvRedis(t, integration.NewRedis(t, integration.RedisOptions{}))
	ctx := ctxT(t)
	const rows = 250 // three clear scripts, and entries on several journal streams
	repo := e.widgets(t)
	for id := int64(1); id <= rows; id++ {
		if err := repo.Save(ctx, &Widget{ID: id, Name: fmt.Sprintf("r%d-v1", id), Price: 1}); err != nil {
			t.Fatal(err)
		}
	}
	log := &pipelineLog{streams: e.shards(), beforeFirst: func(ctx context.Context) error {
		return e.rdb.ScriptFlush(ctx).Err()
	}}
	e.rdb.(*redis.Client).AddHook(log)
	drain(t, e.flusher(t, writeback.FlusherOptions{BatchSize: 1000}))

	log.mu.Lock()
	pipes := log.pipes
	log.mu.Unlock()
	if err := clearsFirst(pipes); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, p := range pipes {
		if p.noscript && slices.Contains(p.cmds, "ack") {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d clear-and-acknowledge pipelines met NOSCRIPT, want 1 (the scripts were flushed before the first)", failed)
	}
	if got := len(e.rows(t)); got != rows {
		t.Errorf("%d rows in Postgres, want %d", got, rows)
	}
	for id, names := range e.applications(t) {
		if len(names) != 1 {
			t.Errorf("row %d written %d times in Postgres (%q), want once", id, len(names), names)
		}
	}
	if left := e.pendingKeys(ctx); len(left) != 0 {
		t.Errorf("%d pending records left after the flush, as %q", len(left), left[0])
	}
}

// TestClearBeforeAckControl: clearsFirst, which TestClearBeforeAck checks the wire
// with, refuses an acknowledgement queued before a clear, and a flush with no
// pipeline doing both.
func TestClearBeforeAckControl(t *testing.T) {
	for _, pipes := range [][]loggedPipeline{
		{{cmds: []string{"clear", "ack", "clear", "ack"}}},
		{{cmds: []string{"clear", "clear"}}, {cmds: []string{"ack"}}},
		nil,
	} {
		if err := clearsFirst(pipes); err == nil {
			t.Errorf("clearsFirst(%v) accepted it", pipes)
		}
	}
	if err := clearsFirst([]loggedPipeline{{cmds: []string{"clear", "clear", "ack", "ack"}}}); err != nil {
		t.Errorf("clearsFirst refused a good pipeline: %v", err)
	}
}

// clearsFirst checks the pipelines that acknowledge journal entries: each queues every
// clear before any acknowledgement, and at least one both clears and acknowledges.
func clearsFirst(pipes []loggedPipeline) error {
	both := 0
	for _, p := range pipes {
		first := slices.Index(p.cmds, "ack")
		if first < 0 {
			continue
		}
		if slices.Contains(p.cmds[first:], "clear") {
			return fmt.Errorf("a pipeline queued a clear after an acknowledgement: %v", p.cmds)
		}
		if first > 0 {
			both++
		}
	}
	if both == 0 {
		return fmt.Errorf("no pipeline both cleared and acknowledged (%d pipelines): the split path was taken", len(pipes))
	}
	return nil
}

// pipelineLog is a go-redis hook that records the scripts of the pipelines sent:
// "ack" for a script on a journal stream, "clear" for any other.
type pipelineLog struct {
	streams []string
	// beforeFirst, if set, runs once, before the first pipeline with an
	// acknowledgement is sent.
	beforeFirst func(ctx context.Context) error

	mu    sync.Mutex
	pipes []loggedPipeline
}

type loggedPipeline struct {
	cmds     []string
	noscript bool // its commands failed with NOSCRIPT
}

func (l *pipelineLog) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (l *pipelineLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (l *pipelineLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var p loggedPipeline
		for _, c := range cmds {
			args := c.Args()
			if c.Name() != "evalsha" || len(args) < 4 {
				continue
			}
			kind := "clear"
			if slices.Contains(l.streams, fmt.Sprint(args[3])) {
				kind = "ack"
			}
			p.cmds = append(p.cmds, kind)
		}
		if slices.Contains(p.cmds, "ack") {
			l.mu.Lock()
			before := l.beforeFirst
			l.beforeFirst = nil
			l.mu.Unlock()
			if before != nil {
				if err := before(ctx); err != nil {
					return err
				}
			}
		}
		err := next(ctx, cmds)
		p.noscript = redis.HasErrorPrefix(err, "NOSCRIPT")
		l.mu.Lock()
		l.pipes = append(l.pipes, p)
		l.mu.Unlock()
		return err
	}
}
