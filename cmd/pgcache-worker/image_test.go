package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/pgcache/pgcache/integration"
)

// TestWorkerImage builds the worker's image with scripts/worker-image.sh (a static
// binary on an empty base, nothing pulled), checks that it runs as an unprivileged
// user, runs it against a Postgres and a Redis reached at their containers' addresses,
// and checks /readyz and the invalidation of a raw SQL change.
func TestWorkerImage(t *testing.T) {
	t.Parallel()
	tag := "pgcache-worker:test-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "../../scripts/worker-image.sh", tag).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/worker-image.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "image", "rm", "-f", tag).Run() })
	user, err := exec.CommandContext(ctx, "docker", "image", "inspect", "--format", "{{.Config.User}}", tag).Output()
	if err != nil || strings.TrimSpace(string(user)) != "65534:65534" {
		t.Fatalf("the image's user is %q (%v), want 65534:65534 (nobody)", user, err)
	}

	pgServer := integration.NewPostgres(t, integration.PostgresOptions{Direct: true})
	rd := integration.NewRedis(t, integration.RedisOptions{Direct: true})
	if pgServer.Reach() != integration.ReachContainer || rd.Reach() != integration.ReachContainer {
		t.Fatalf("the worker's container reaches the servers at their containers' addresses, which this machine does not reach (%s, %s)", pgServer.Reach(), rd.Reach())
	}
	prefix := rd.Prefix(t)
	f := newFixtureDBOn(t, pgServer.NewDatabase(t), rd.Client(t), prefix)
	ctr, err := testcontainers.Run(ctx, tag,
		testcontainers.WithEnv(map[string]string{
			"PGCACHE_POSTGRES_URL": f.pg.RoleURL, "PGCACHE_REDIS_ADDR": rd.Addr(), "PGCACHE_PREFIX": prefix,
			"PGCACHE_TABLES": "widgets", "PGCACHE_SLOT": "s_" + f.pg.Name, "PGCACHE_STATUS_INTERVAL": "100ms",
		}),
		testcontainers.WithExposedPorts("9187/tcp"),
		testcontainers.WithWaitStrategy(wait.ForLog("pgcache-worker starting")),
	)
	if ctr != nil {
		t.Cleanup(func() { _ = ctr.Terminate(context.Background()) })
	}
	if err != nil {
		t.Fatal(err)
	}
	ip, err := ctr.ContainerIP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + net.JoinHostPort(ip, "9187")
	integration.Eventually(t, "the container's /readyz 200", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if _, _, err := f.repo.Get(ctx, int64(1)); err != nil {
		t.Fatal(err)
	}
	key, _ := f.repo.Key(int64(1))
	if f.rdb.Exists(ctx, key).Val() != 1 {
		t.Fatal("row 1 was not cached")
	}
	if err := f.db.Exec(`UPDATE widgets SET name = 'changed' WHERE id = 1`).Error; err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "the containerised worker to delete the changed row's key", func() bool {
		return f.rdb.Exists(ctx, key).Val() == 0
	})
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), "pgcache_keys_deleted_total 1") {
		t.Fatalf("metrics:\n%s", b)
	}
}
