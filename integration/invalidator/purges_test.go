package invalidator_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/keys"
)

// batchPurger fails while down and records the batches it was given otherwise.
type batchPurger struct {
	down    atomic.Bool
	mu      sync.Mutex
	batches [][]string
}

func (p *batchPurger) Purge(_ context.Context, tags []string) error {
	if p.down.Load() {
		return errors.New("test: CDN down")
	}
	p.mu.Lock()
	p.batches = append(p.batches, append([]string(nil), tags...))
	p.mu.Unlock()
	return nil
}

// TestPurgeStreamBatches: one transaction updates 600 rows while the purger fails.
// The worker acknowledges it, with the 600 row tags in the purge stream in entries of
// at most 256 tags; once the purger works, RunPurges purges every tag in calls of at
// most 256 tags and empties the stream.
func TestPurgeStreamBatches(t *testing.T) {
	t.Parallel()
	const rows = 600
	e := newEnvOn(t, servers.Postgres(t).NewDatabase(t), servers.Redis(t), rows)
	e.get(t, 1) // announces the table's version
	p := &batchPurger{}
	p.down.Store(true)
	w, err := invalidator.NewWorker(e.Redis, invalidator.WorkerOptions{
		Postgres: e.PG.RoleURL,
		Stream:   faultOptions(e.slot),
		Invalidator: invalidator.Options{Prefix: e.Prefix, Purger: p, PurgeTimeout: 200 * time.Millisecond,
			RepurgeAfter: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	fixture.RunWorker(t, context.Background(), w)

	want := map[string]bool{}
	for id := int64(1); id <= rows; id++ {
		v, err := e.Repo.Key(id)
		if err != nil {
			t.Fatal(err)
		}
		k, _ := keys.KeyOfValue(v)
		want[k.Tag()] = true
	}
	e.Exec(t, `UPDATE widgets SET name = 'v1'`)
	integration.Eventually(t, "the transaction acknowledged", func() bool { return w.Stats().Transactions >= 1 })

	stream := keys.Prefix(e.Prefix).Purges()
	msgs, err := e.Redis.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]bool{}
	for _, m := range msgs {
		var tags []string
		if err := json.Unmarshal([]byte(m.Values["tags"].(string)), &tags); err != nil {
			t.Fatal(err)
		}
		if len(tags) > 256 {
			t.Errorf("stream entry %s holds %d tags, want at most 256", m.ID, len(tags))
		}
		for _, tag := range tags {
			kept[tag] = true
		}
	}
	for tag := range want {
		if !kept[tag] {
			t.Fatalf("row tag %s is not in the purge stream (%d entries, %d tags)", tag, len(msgs), len(kept))
		}
	}

	p.down.Store(false)
	integration.Eventually(t, "the purge stream to be empty", func() bool {
		n, err := e.Redis.XLen(context.Background(), stream).Result()
		return err == nil && n == 0
	})
	integration.Eventually(t, "PurgesPending to be 0", func() bool { return w.Stats().PurgesPending == 0 })
	p.mu.Lock()
	defer p.mu.Unlock()
	purged := map[string]bool{}
	for _, b := range p.batches {
		if len(b) > 256 {
			t.Errorf("a purge of %d tags, want at most 256", len(b))
		}
		for _, tag := range b {
			purged[tag] = true
		}
	}
	for tag := range want {
		if !purged[tag] {
			t.Fatalf("row tag %s was never purged (%d purges)", tag, len(p.batches))
		}
	}
}
