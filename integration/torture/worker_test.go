package torture

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildWorker builds cmd/pgcache-worker once for the test, in its own module.
func buildWorker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pgcache-worker")
	cmd := exec.Command("go", "build", "-C", "../../cmd", "-o", bin, "./pgcache-worker")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build worker: %v\n%s", err, out)
	}
	return bin
}

type workerProc struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// startWorker runs the worker binary, which also flushes the write-back journal under a
// stable consumer name, so a restarted worker takes back the entries it held.
func startWorker(t *testing.T, bin, pgURL, redisAddr, prefix, slot string) *workerProc {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "-postgres", pgURL, "-redis", redisAddr, "-prefix", prefix, "-slot", slot,
		"-tables", "items,back_items,odd_items,soft_items,keyed_items", "-listen", addr, "-status-interval", "200ms", "-log-level", "error",
		"-writeback", "-writeback-consumer", "torture-worker")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &workerProc{cmd: cmd, addr: addr, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(w.done) }()
	t.Cleanup(w.kill)
	return w
}

func (w *workerProc) kill() {
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
}

func (w *workerProc) awaitReady(ctx context.Context) error {
	c := &http.Client{Timeout: time.Second}
	for {
		if resp, err := c.Get("http://" + w.addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-w.done:
			return fmt.Errorf("worker exited before it was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (w *workerProc) waitReady(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.awaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

// cacheProc is a cache process: this test binary re-executed in a role.
type cacheProc struct {
	role   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser // closed to stop the process
	counts map[string]int64
	failed string // its "e" line
	lines  sync.WaitGroup
	killed bool // by the test, with SIGKILL
}

// startCache starts a cache process in role for at most d (stop ends it), feeding what it reports into h. A
// write-back process writes versions above versions.
func startCache(t *testing.T, role, pgURL, redisAddr, prefix string, d time.Duration, versions int64, h *history) *cacheProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"="+role, envPostgres+"="+pgURL, envRedis+"="+redisAddr,
		envPrefix+"="+prefix, envFor+"="+d.String(), envVersions+"="+strconv.FormatInt(versions, 10))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &cacheProc{role: role, cmd: cmd, stdin: in, counts: map[string]int64{}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	p.lines.Go(func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.parse(sc.Text(), h)
		}
	})
	return p
}

func (p *cacheProc) parse(line string, h *history) {
	kind, rest, _ := strings.Cut(line, " ")
	f := strings.Fields(rest)
	num := func(i int) int64 { n, _ := strconv.ParseInt(f[i], 10, 64); return n }
	switch {
	case (kind == "c" || kind == "d" || kind == "r") && len(f) == 4:
		r, ver, at := row{f[0], num(1)}, num(2), time.Unix(0, num(3))
		if kind == "r" {
			h.read(r, ver, at)
		} else {
			h.committedState(r, ver, kind == "d", at)
		}
	case kind == "u" || kind == "g":
		l, err := parseLookup(kind, f, num)
		if err != nil {
			p.failed = "unreadable report line: " + line
			return
		}
		h.lookup(l)
	case kind == "a" && len(f) == 3:
		h.readAbsent(row{f[0], num(1)}, time.Unix(0, num(2)))
	case kind == "n" && len(f) == 2:
		p.counts[f[0]] = num(1)
	case kind == "e":
		p.failed = rest
	default:
		p.failed = "unreadable report line: " + line
	}
}

// stop tells the process to finish: it reports its counts and exits.
func (p *cacheProc) stop() { _ = p.stdin.Close() }

// kill kills the process with SIGKILL, mid-write: what it acknowledged must survive.
func (p *cacheProc) kill() {
	p.killed = true
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
}

// wait waits for the process to end and its report to be read. A process the test
// killed reports no counts and may have cut its last line short.
func (p *cacheProc) wait() error {
	p.lines.Wait()
	err := p.cmd.Wait()
	if p.killed {
		if strings.HasPrefix(p.failed, "unreadable report line") {
			p.failed = ""
		}
		err = nil
	}
	if p.failed != "" {
		return fmt.Errorf("cache process %s: %s", p.role, p.failed)
	}
	if err != nil {
		return fmt.Errorf("cache process %s: %v", p.role, err)
	}
	return nil
}
