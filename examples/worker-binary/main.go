// Worker binary: run cmd/pgcache-worker as its own process beside the application, as
// a deployment would (a sidecar, a systemd unit). This program starts it as a child,
// waits for /readyz, changes a cached row with raw SQL and watches the worker delete
// its entry, reads /metrics, and stops the worker with SIGTERM.
//
//	eval "$(scripts/env.sh)" && go run -C examples ./worker-binary
//
// It builds the worker with `go build` (inside the examples module, whose go.mod lists
// the worker as a tool), or runs the binary named by -worker or PGCACHE_WORKER_BIN. It
// starts Postgres and Redis in containers, or uses PGCACHE_POSTGRES_URL and
// PGCACHE_REDIS_ADDR. It exits 1 if the worker did not behave as it says.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/examples/internal/demo"
	"github.com/pgcache/pgcache/readthrough"
)

type Article struct {
	ID    int64 `gorm:"primaryKey"`
	Title string
}

const (
	prefix = "workerbin"     // the application's cache and the worker's -prefix
	slot   = "worker_binary" // the worker's replication slot and publication
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	workerBin := flag.String("worker", os.Getenv("PGCACHE_WORKER_BIN"), "pgcache-worker binary to run; empty: go build it ($PGCACHE_WORKER_BIN)")
	flag.Parse()
	// Ctrl-C or SIGTERM cancels ctx, and with it the worker (see startWorker).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, *workerBin); err != nil {
		log.Error("worker-binary failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, workerBin string) error {
	if workerBin == "" {
		dir, err := os.MkdirTemp("", "pgcache-worker-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if workerBin, err = buildWorker(ctx, log, dir); err != nil {
			return err
		}
	}
	pgURL, redisAddr, stopServers, err := demo.Servers(ctx, log)
	if err != nil {
		return err
	}
	defer stopServers()
	db, err := gorm.Open(postgres.Open(pgURL), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	articles, err := setup(ctx, log, db, rdb, redisAddr)
	if err != nil {
		return err
	}

	worker, listen, stopWorker, err := launch(ctx, log, db, workerBin, pgURL, redisAddr)
	if err != nil {
		return err
	}
	defer stopWorker()

	base := "http://" + listen
	if err := ready(ctx, worker, base); err != nil {
		return err
	}
	if err := rawUpdate(ctx, db, rdb, articles, worker); err != nil {
		return err
	}
	if err := metrics(ctx, base); err != nil {
		return err
	}
	// 4. SIGTERM: the worker finishes the transaction at hand, confirms it and exits 0.
	start := time.Now()
	if err := worker.stop(10 * time.Second); err != nil {
		return err
	}
	fmt.Printf("4. SIGTERM: worker exited 0 after %v\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// launch starts the worker as a child process listening on a free port, on a fresh
// slot. stop ends the worker (if still running) and drops its slot.
func launch(ctx context.Context, log *slog.Logger, db *gorm.DB, workerBin, pgURL, redisAddr string) (worker *workerProcess, listen string, stop func(), err error) {
	// The worker's replication slot keeps WAL on the server for as long as it exists,
	// read or not. A deployment keeps it, so a restarted worker resumes where it
	// stopped; this example drops it when it ends, and one an earlier run left behind.
	if err := dropSlot(ctx, db, slot); err != nil {
		return nil, "", nil, err
	}
	dropAgain := func() {
		if err := dropSlot(context.WithoutCancel(ctx), db, slot); err != nil {
			log.Warn("could not drop the worker's replication slot", "slot", slot, "error", err)
		}
	}

	// The worker, as a child process. Its flags can also be given as PGCACHE_*
	// environment variables; see `go doc ./cmd/pgcache-worker`.
	if listen, err = freeAddr(); err == nil {
		worker, err = startWorker(ctx, workerBin,
			"-postgres", pgURL, "-redis", redisAddr, "-prefix", prefix, "-tables", "articles",
			"-slot", slot, "-publication", slot,
			"-listen", listen, "-status-interval", "1s")
	}
	if err != nil {
		dropAgain()
		return nil, "", nil, err
	}
	stop = func() {
		_ = worker.stop(10 * time.Second) // on every return: it owns a child
		dropAgain()
	}
	return worker, listen, stop, nil
}

// buildWorker builds cmd/pgcache-worker into dir and returns the binary's path.
func buildWorker(ctx context.Context, log *slog.Logger, dir string) (string, error) {
	bin := filepath.Join(dir, "pgcache-worker")
	log.Info("building the worker", "output", bin)
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/pgcache/pgcache/cmd/pgcache-worker")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("go build pgcache-worker (run this inside the examples module, or pass -worker): %w", err)
	}
	return bin, nil
}

// setup makes the articles table with article 1 and registers the cached model.
func setup(ctx context.Context, log *slog.Logger, db *gorm.DB, rdb *redis.Client, redisAddr string) (*readthrough.Repository[Article], error) {
	if err := db.AutoMigrate(&Article{}); err != nil {
		return nil, err
	}
	if err := db.Exec(`INSERT INTO articles (id, title) VALUES (1, 'first draft') ON CONFLICT (id) DO UPDATE SET title = excluded.title`).Error; err != nil {
		return nil, err
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis %s: %w", redisAddr, err)
	}
	cache, err := readthrough.New(db, rdb, readthrough.Options{Prefix: prefix, Logger: log})
	if err != nil {
		return nil, err
	}
	return readthrough.Register[Article](cache, readthrough.ModelOptions{})
}

// ready is step 1: /readyz turns 200 once the worker streams. Its slot is new, a gap
// in what it saw, so it first invalidated every cached article.
func ready(ctx context.Context, worker *workerProcess, base string) error {
	start := time.Now()
	err := worker.waitFor(ctx, 30*time.Second, func() bool {
		code, _, err := httpGet(ctx, base+"/readyz")
		return err == nil && code == http.StatusOK
	})
	if err != nil {
		return fmt.Errorf("worker not ready: %w", err)
	}
	fmt.Printf("1. worker ready after %v (pid %d, %s)\n", time.Since(start).Round(time.Millisecond), worker.cmd.Process.Pid, base)
	return nil
}

// rawUpdate is step 2: cache article 1, change it with raw SQL behind the library's
// back, and watch the worker delete its entry.
func rawUpdate(ctx context.Context, db *gorm.DB, rdb *redis.Client, articles *readthrough.Repository[Article], worker *workerProcess) error {
	if _, ok, err := articles.Get(ctx, 1); err != nil || !ok {
		return fmt.Errorf("article 1: found=%v, err=%v", ok, err)
	}
	key, err := articles.Key(1)
	if err != nil {
		return err
	}
	if n, err := rdb.Exists(ctx, key).Result(); err != nil || n != 1 {
		return fmt.Errorf("article 1 is not cached after a read (exists=%d, err=%v)", n, err)
	}
	if err := db.Exec(`UPDATE articles SET title = 'final' WHERE id = 1`).Error; err != nil {
		return err
	}
	committed := time.Now()
	err = worker.waitFor(ctx, 5*time.Second, func() bool {
		n, err := rdb.Exists(ctx, key).Result()
		return err == nil && n == 0
	})
	if err != nil {
		return fmt.Errorf("article 1 still cached after the raw UPDATE committed: %w", err)
	}
	lag := time.Since(committed)
	a, _, err := articles.Get(ctx, 1)
	if err != nil {
		return err
	}
	fmt.Printf("2. raw UPDATE: entry deleted %v after the commit; Get now returns %q\n", lag.Round(10*time.Microsecond), a.Title)
	if a.Title != "final" {
		return fmt.Errorf("after the invalidation Get returned %q, want \"final\"", a.Title)
	}
	return nil
}

// metrics is step 3: a few of the worker's metrics.
func metrics(ctx context.Context, base string) error {
	code, body, err := httpGet(ctx, base+"/metrics")
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("/metrics: status %d, err %v", code, err)
	}
	metrics := map[string]string{} // name (with labels, if any) → value
	for line := range strings.Lines(body) {
		if name, value, ok := strings.Cut(strings.TrimSpace(line), " "); ok && strings.HasPrefix(name, "pgcache_") {
			metrics[name] = value
		}
	}
	fmt.Println("3. /metrics:")
	for _, name := range []string{"pgcache_slot_active", "pgcache_transactions_total", "pgcache_keys_deleted_total", "pgcache_lag_bytes"} {
		fmt.Printf("   %s %s\n", name, metrics[name])
	}
	if v := metrics["pgcache_keys_deleted_total"]; v == "" || v == "0" {
		return fmt.Errorf("/metrics: pgcache_keys_deleted_total is %q after the worker deleted a key", v)
	}
	return nil
}

// workerProcess is the child process, owned by this program: stop ends it, and so does
// the end of the context it was started with.
type workerProcess struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	exited chan struct{} // closed once the process was waited for
	err    error         // Wait's error, set before exited is closed
}

func startWorker(ctx context.Context, bin string, args ...string) (*workerProcess, error) {
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, bin, args...)
	// When ctx ends, ask the worker to stop as SIGTERM does, and kill it if it has not
	// exited 10s later.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Stdout = os.Stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	w := &workerProcess{cmd: cmd, cancel: cancel, exited: make(chan struct{})}
	go func() {
		// The worker logs JSON to stderr; pass it on, marked as the worker's.
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintf(os.Stderr, "pgcache-worker: %s\n", sc.Text())
		}
		w.err = cmd.Wait() // after the pipe is drained, as StderrPipe requires
		close(w.exited)
	}()
	return w, nil
}

// stop asks the worker to stop, as SIGTERM does, and waits up to timeout for it to
// exit; then it kills it. It returns an error unless the worker exited 0. Once the
// worker exited, stop only reports how.
func (w *workerProcess) stop(timeout time.Duration) error {
	defer w.cancel()
	select {
	case <-w.exited:
	default:
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.exited:
		case <-time.After(timeout):
			_ = w.cmd.Process.Kill()
			<-w.exited
			return fmt.Errorf("the worker did not exit within %v of SIGTERM; killed it", timeout)
		}
	}
	if code := w.cmd.ProcessState.ExitCode(); code != 0 {
		return fmt.Errorf("the worker exited %d (%v)", code, w.err)
	}
	return nil
}

// waitFor polls cond until it holds; it fails when timeout passes, ctx ends or the
// worker exits.
func (w *workerProcess) waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("not within %v", timeout)
			}
			return ctx.Err()
		case <-w.exited:
			return fmt.Errorf("the worker exited %d: %v", w.cmd.ProcessState.ExitCode(), w.err)
		case <-tick.C:
		}
	}
	return nil
}

func httpGet(ctx context.Context, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// dropSlot drops the replication slot and the publication once no worker uses them.
func dropSlot(ctx context.Context, db *gorm.DB, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		// No such slot: no row, nothing done. A worker that just exited lets go of its
		// slot a moment later; until then the drop fails.
		err := db.WithContext(ctx).Exec(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = ?`, name).Error
		if err == nil {
			return db.WithContext(ctx).Exec(`DROP PUBLICATION IF EXISTS ` + name).Error
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drop replication slot %s: %w", name, err)
		case <-tick.C:
		}
	}
}

// freeAddr returns a loopback address with a port free at the moment, for -listen.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
