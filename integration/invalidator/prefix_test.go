package invalidator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/invalidator"
)

// TestRegistryLostBeforeStart: the registry is lost while rows stay cached, and the
// worker starts afresh, knowing no versions. A change must still invalidate its row.
func TestRegistryLostBeforeStart(t *testing.T) {
	t.Parallel()
	// A Redis of its own: on the shared one, other tests' registries list a widgets
	// table too, and the worker would rightly take this for a wrong prefix.
	rd := integration.NewRedis(t, integration.RedisOptions{})
	e := newEnvOn(t, servers.Postgres(t).NewDatabase(t), rd, 3)
	e.start(t) // the slot exists; its gap flush is behind us
	e.Fill(t, 1)
	e.Barrier(t, 3)

	// A new worker, on the same slot, after the registry was lost.
	inv, err := invalidator.New(e.Redis, invalidator.Options{Prefix: e.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	e.stop()
	if err := e.Redis.Del(t.Context(), e.Prefix+":models").Err(); err != nil {
		t.Fatal(err)
	}
	runStream(t, e.PG.RoleURL, cdc.Options{Slot: e.slot, Publication: "pgcache", Tables: []string{"widgets"}, StatusInterval: 100 * time.Millisecond}, inv)
	e.Exec(t, `UPDATE widgets SET name = 'after the loss' WHERE id = 1`)
	integration.Eventually(t, "row 1 invalidated", func() bool { return !e.Cached(t, 1) })
	if w, _ := e.get(t, 1); w.Name != "after the loss" {
		t.Fatalf("Get = %+v, want the changed row", w)
	}
	if inv.Stats().RegistryMissing == 0 {
		t.Error("Stats.RegistryMissing did not count the batch handled without a registry")
	}
}

// TestWrongPrefix: a worker started with a prefix no application uses must say so and
// confirm nothing, so that once its prefix is put right the changes made meanwhile are
// invalidated.
func TestWrongPrefix(t *testing.T) {
	t.Parallel()
	// A Redis of its own: the registries of other tests' applications would look like
	// applications of this one.
	rd := integration.NewRedis(t, integration.RedisOptions{})
	e := newEnvOn(t, servers.Postgres(t).NewDatabase(t), rd, 2)
	e.start(t)
	e.Fill(t, 1, 2)
	e.Barrier(t, 2)
	e.stop()

	wrong, err := invalidator.New(e.Redis, invalidator.Options{Prefix: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan error, 16)
	_, stopWrong := runStream(t, e.PG.RoleURL, cdc.Options{Slot: e.slot, Publication: "pgcache", Tables: []string{"widgets"}, StatusInterval: 100 * time.Millisecond},
		errRecorder{wrong, handled})
	e.Exec(t, `UPDATE widgets SET name = 'changed under the wrong prefix' WHERE id = 1`)
	select {
	case err := <-handled:
		if !errors.Is(err, invalidator.ErrWrongPrefix) {
			t.Fatalf("handling under the wrong prefix: %v, want ErrWrongPrefix", err)
		}
		t.Log(err)
	case <-time.After(time.Minute):
		t.Fatal("the worker with the wrong prefix handled the change without an error")
	}
	stopWrong()

	// The prefix put right: the change is delivered again and invalidated.
	runStream(t, e.PG.RoleURL, cdc.Options{Slot: e.slot, Publication: "pgcache", Tables: []string{"widgets"}, StatusInterval: 100 * time.Millisecond}, e.inv)
	integration.Eventually(t, "row 1 invalidated once the prefix is right", func() bool { return !e.Cached(t, 1) })
}

// errRecorder passes on the errors of a BatchHandler.
type errRecorder struct {
	*invalidator.Invalidator
	errs chan<- error
}

func (r errRecorder) HandleBatch(ctx context.Context, txs []*cdc.Tx) error {
	err := r.Invalidator.HandleBatch(ctx, txs)
	if err != nil {
		select {
		case r.errs <- err:
		default:
		}
	}
	return err
}
