package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/keys"
)

// TestStatusAndSlotMetrics: the status command and the slot metrics tell a slot that
// is missing, streamed, and streamed by nobody apart, and the status command flags
// dead letters and prints the purge stream's length; its exit code says whether an
// operator is needed.
func TestStatusAndSlotMetrics(t *testing.T) {
	t.Parallel()
	rd := servers.Redis(t)
	prefix := rd.Prefix(t)
	f := newFixtureDB(t, rd.Client(t), prefix)
	slot := "s_" + f.pg.Name
	env := map[string]string{"PGCACHE_POSTGRES_URL": f.pg.RoleURL, "PGCACHE_REDIS_ADDR": rd.Addr(), "PGCACHE_PREFIX": prefix, "PGCACHE_SLOT": slot}
	statusOf := func() (int, string) {
		var out, errs bytes.Buffer
		code := status(t.Context(), nil, func(k string) string { return env[k] }, &out, &errs)
		return code, out.String() + errs.String()
	}
	if code, out := statusOf(); code != exitAttention || !strings.Contains(out, "! slot "+slot+": missing") {
		t.Fatalf("before any worker: exit %d:\n%s", code, out)
	}

	w := startRun(t, []string{"-tables", "widgets", "-status-interval", "100ms"}, env)
	invalidates(t, f, w)
	metrics := func() string {
		resp, err := http.Get("http://" + w.addr + "/metrics")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	var m string
	integration.Eventually(t, "slot metrics", func() bool {
		m = metrics()
		return strings.Contains(m, "pgcache_slot_up 1") && strings.Contains(m, "pgcache_slot_exists 1") &&
			strings.Contains(m, "pgcache_slot_streamed 1") && strings.Contains(m, `pgcache_slot_wal_status{status="reserved"} 1`) &&
			strings.Contains(m, "pgcache_slot_retained_wal_bytes ")
	})
	t.Log(m)
	if code, out := statusOf(); code != exitOK || !strings.Contains(out, "  slot "+slot+": streamed") ||
		!strings.Contains(out, "registry: table public.widgets cached under versions") || !strings.Contains(out, ", published by pgcache") {
		t.Fatalf("with the worker streaming: exit %d:\n%s\nworker logs:\n%s", code, out, w.logs)
	}

	// The worker stops: nobody streams the slot, and it retains the WAL written since.
	w.stop()
	if code := w.wait(t); code != exitOK {
		t.Fatalf("worker exit %d:\n%s", code, w.logs)
	}
	if err := f.db.Exec(`INSERT INTO widgets SELECT g, 'more' FROM generate_series(2, 1000) g`).Error; err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "the slot streamed by nobody", func() bool {
		code, out := statusOf()
		return code == exitAttention && strings.Contains(out, "! slot "+slot+": streamed by nobody")
	})
	dl := &redis.XAddArgs{Stream: keys.Prefix(prefix).DeadLetter(), Values: map[string]any{"key": "k", "reason": "planted by the test"}}
	if err := rd.Client(t).XAdd(context.Background(), dl).Err(); err != nil {
		t.Fatal(err)
	}
	if code, out := statusOf(); code != exitAttention || !strings.Contains(out, "! write-back dead letters: 1") ||
		!strings.Contains(out, "  purge stream: 0 CDN purges pending") {
		t.Fatalf("with a dead letter: exit %d:\n%s", code, out)
	}
	purge := &redis.XAddArgs{Stream: keys.Prefix(prefix).Purges(), Values: map[string]any{"tags": `["t"]`, "due": "0"}}
	if err := rd.Client(t).XAdd(context.Background(), purge).Err(); err != nil {
		t.Fatal(err)
	}
	if _, out := statusOf(); !strings.Contains(out, "  purge stream: 1 CDN purges pending") {
		t.Fatalf("with a purge pending:\n%s", out)
	}

	// Applications cache a table no publication publishes (a worker resolved its
	// unqualified -tables entry to another schema's table, or was never told of it):
	// flagged. A table Postgres no longer has is only noted.
	if err := f.db.Exec(`CREATE SCHEMA app; CREATE TABLE app.widgets (id bigint PRIMARY KEY)`).Error; err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"app.widgets", "public.ghosts"} {
		sp, err := keys.NewSpace(prefix, table, "v1")
		if err != nil {
			t.Fatal(err)
		}
		if err := rd.Client(t).HSet(context.Background(), keys.Prefix(prefix).Registry(), sp.RegistryField(), "1").Err(); err != nil {
			t.Fatal(err)
		}
	}
	code, out := statusOf()
	if code != exitAttention ||
		!strings.Contains(out, "! registry: table app.widgets cached under versions v1, but no publication publishes it") ||
		!strings.Contains(out, "  registry: table public.ghosts cached under versions v1; Postgres has no such table") ||
		!strings.Contains(out, "  registry: table public.widgets cached under versions") {
		t.Fatalf("with a table nobody publishes: exit %d:\n%s", code, out)
	}
}

// TestUnpublishedTableWarned: a worker that starts while applications cache a table no
// publication publishes (here app.widgets, beside the public.widgets it streams) says
// so in its log and exports pgcache_table_unpublished for that table alone.
func TestUnpublishedTableWarned(t *testing.T) {
	t.Parallel()
	rd := servers.Redis(t)
	prefix := rd.Prefix(t)
	f := newFixtureDB(t, rd.Client(t), prefix)
	if err := f.db.Exec(`CREATE SCHEMA app; CREATE TABLE app.widgets (id bigint PRIMARY KEY)`).Error; err != nil {
		t.Fatal(err)
	}
	sp, err := keys.NewSpace(prefix, "app.widgets", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := rd.Client(t).HSet(t.Context(), keys.Prefix(prefix).Registry(), sp.RegistryField(), "1").Err(); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PGCACHE_POSTGRES_URL": f.pg.RoleURL, "PGCACHE_REDIS_ADDR": rd.Addr(), "PGCACHE_PREFIX": prefix, "PGCACHE_SLOT": "s_" + f.pg.Name}
	w := startRun(t, []string{"-tables", "widgets"}, env)
	invalidates(t, f, w)
	integration.Eventually(t, "the warning in the log", func() bool {
		return strings.Contains(w.logs.String(), `"msg":"applications cache tables that no publication publishes`)
	})
	if logs := w.logs.String(); !strings.Contains(logs, `"tables":["app.widgets"]`) {
		t.Fatalf("the warning does not name app.widgets alone:\n%s", logs)
	}
	if v := w.metric(t, `pgcache_table_unpublished{table="app.widgets"}`); v != 1 {
		t.Errorf(`pgcache_table_unpublished{table="app.widgets"} = %v, want 1`, v)
	}
	if v := w.metric(t, `pgcache_table_unpublished{table="public.widgets"}`); v != -1 {
		t.Errorf("public.widgets, which the worker streams, is reported unpublished (%v)", v)
	}
}
