package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

var servers integration.Shared

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		// Re-executed by startWorker as the worker process itself, with the worker's
		// flags for arguments: what main does.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		code := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
		stop()
		os.Exit(code)
	}
	code := m.Run()
	if err := servers.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

func noEnv(string) string { return "" }

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	pg := servers.Postgres(t)
	db := pg.NewDatabase(t)
	rd := servers.Redis(t)
	replica := integration.NewPostgres(t, integration.PostgresOptions{Settings: map[string]string{"wal_level": "replica"}})
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"no flags", nil, exitConfig},
		{"bad writeback env", []string{"-postgres", db.RoleURL, "-redis", rd.Addr(), "-tables", "widgets"}, exitConfig},
		{"bad slot", []string{"-postgres", db.RoleURL, "-redis", rd.Addr(), "-tables", "widgets", "-slot", "Bad-Slot"}, exitConfig},
		{"redis unreachable", []string{"-postgres", db.RoleURL, "-redis", "127.0.0.1:1", "-tables", "widgets"}, exitNoRedis},
		{"wal_level replica", []string{"-postgres", replica.URL(), "-redis", rd.Addr(), "-tables", "widgets", "-slot", "s_wal"}, exitWalLevel},
		{"missing table", []string{"-postgres", db.RoleURL, "-redis", rd.Addr(), "-tables", "no_such_table", "-slot", "s_" + db.Name}, exitNoTable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs integration.LogBuffer
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append(tc.args, "-listen", freeAddr(t))
			env := noEnv
			if tc.name == "bad writeback env" {
				env = func(k string) string { return map[string]string{"PGCACHE_WRITEBACK": "yes please"}[k] }
			}
			if got := run(ctx, args, env, &logs); got != tc.want {
				t.Fatalf("exit %d, want %d; logs:\n%s", got, tc.want, logs.String())
			}
		})
	}
}

func TestWorkerInvalidatesAndStops(t *testing.T) {
	t.Parallel()
	pg := servers.Postgres(t).NewDatabase(t)
	rd := servers.Redis(t)
	prefix := rd.Prefix(t)
	rdb := rd.Client(t)
	db := fixture.Open(t, pg.RoleURL)
	if err := db.AutoMigrate(&fixture.Widget{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(`INSERT INTO widgets VALUES (1, 'old')`).Error; err != nil {
		t.Fatal(err)
	}
	cache, _ := readthrough.New(db, rdb, readthrough.Options{Prefix: prefix, RedisTimeout: 5 * time.Second})
	repo, err := readthrough.Register[fixture.Widget](cache, readthrough.ModelOptions{})
	if err != nil {
		t.Fatal(err)
	}

	addr := freeAddr(t)
	var logs integration.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"-listen", addr, "-tables", "widgets", "-slot", "s_" + pg.Name, "-status-interval", "100ms"},
			func(k string) string {
				return map[string]string{"PGCACHE_POSTGRES_URL": pg.RoleURL, "PGCACHE_REDIS_ADDR": rd.Addr(), "PGCACHE_PREFIX": prefix}[k]
			}, &logs)
	}()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	integration.Eventually(t, "/readyz 200", func() bool { code, _ := get("/readyz"); return code == 200 })
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}

	if _, _, err := repo.Get(ctx, int64(1)); err != nil {
		t.Fatal(err)
	}
	key, _ := repo.Key(int64(1))
	if err := db.Exec(`UPDATE widgets SET name = 'new' WHERE id = 1`).Error; err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "key deleted", func() bool { return rdb.Exists(ctx, key).Val() == 0 })
	integration.Eventually(t, "metrics", func() bool {
		_, body := get("/metrics")
		return strings.Contains(body, "pgcache_keys_deleted_total 1") && strings.Contains(body, "pgcache_slot_active 1")
	})

	cancel() // as SIGTERM does
	select {
	case code := <-exit:
		if code != exitOK {
			t.Fatalf("exit %d after cancel, want 0; logs:\n%s", code, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not stop")
	}
	if !strings.Contains(logs.String(), `"msg":"pgcache-worker stopped"`) {
		t.Fatalf("no JSON stop log:\n%s", logs.String())
	}
}

// With -writeback the worker applies the journaled writes of a write-back model that
// the application saved without running a flusher of its own.
func TestWorkerFlushesWriteBack(t *testing.T) {
	t.Parallel()
	pg := servers.Postgres(t).NewDatabase(t)
	rd := servers.Redis(t)
	prefix := rd.Prefix(t)
	db := fixture.Open(t, pg.RoleURL)
	if err := db.AutoMigrate(&fixture.Widget{}); err != nil {
		t.Fatal(err)
	}
	cache, _ := readthrough.New(db, rd.Client(t), readthrough.Options{Prefix: prefix, RedisTimeout: 5 * time.Second})
	repo, err := readthrough.Register[fixture.Widget](cache, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := repo.Save(ctx, &fixture.Widget{ID: 7, Name: "pending"}); err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := db.Model(&fixture.Widget{}).Count(&n).Error; err != nil || n != 0 {
		t.Fatalf("before the worker: %d rows in Postgres (%v), want 0", n, err)
	}

	addr := freeAddr(t)
	var logs integration.LogBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"-postgres", pg.RoleURL, "-redis", rd.Addr(), "-prefix", prefix, "-tables", "widgets",
			"-slot", "s_" + pg.Name, "-listen", addr, "-writeback", "-writeback-consumer", "worker-1"}, noEnv, &logs)
	}()
	integration.Eventually(t, "the write in Postgres", func() bool {
		var w fixture.Widget
		return db.Where("id = 7").Take(&w).Error == nil && w.Name == "pending"
	})
	integration.Eventually(t, "flusher metrics", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), "pgcache_writeback_applied_total 1") && strings.Contains(string(b), "pgcache_writeback_backlog 0")
	})
	cancel()
	select {
	case code := <-exit:
		if code != exitOK {
			t.Fatalf("exit %d, want 0; logs:\n%s", code, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not stop")
	}
}
