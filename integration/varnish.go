package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/testcontainers/testcontainers-go"
)

// EnvVarnishImage selects the Varnish image; DefaultVarnishImage is used when it is
// empty. Either must hold varnishd and vmod xkey (varnish-modules): the official images
// ship both since 7.1; scripts/build-images.sh builds one from Debian packages.
const (
	EnvVarnishImage     = "PGCACHE_VARNISH_IMAGE"
	DefaultVarnishImage = "varnish:7.7"
)

// ReachHostNetwork: a container in this machine's network namespace (Docker's host
// network), at a loopback address and port of its own, as Varnish is.
const ReachHostNetwork Reach = "host network"

// varnishVCLPath is where the container finds its VCL.
const varnishVCLPath = "/etc/varnish/pgcache.vcl"

// VarnishOptions configure a Varnish container.
type VarnishOptions struct {
	// Backend is the host:port of the HTTP server Varnish fronts, as Varnish reaches it:
	// the container shares this machine's network (see StartVarnish), so a server of the
	// test process listening on 127.0.0.1 is reached at its own address. It replaces the
	// .host and .port of the VCL's `backend default`; empty leaves the VCL's.
	Backend string
	// Image is the image to run. Empty means $PGCACHE_VARNISH_IMAGE, else
	// DefaultVarnishImage.
	Image string
	// VCL is the configuration to run. Empty means the one users deploy,
	// deploy/varnish/pgcache.vcl in the repository.
	VCL []byte
	// PurgeACL, when not nil, replaces the entries of the VCL's `acl purgers` (by
	// default loopback only, where the harness's clients are): each is an address or a
	// network in VCL's syntax without quotes, such as "10.0.0.0/8". An empty, non-nil
	// list lets nobody purge.
	PurgeACL []string
	// Args are more varnishd arguments, such as "-p", "default_ttl=5".
	Args []string
}

// Varnish is a running Varnish Cache in a container of the harness's. It is safe for
// concurrent use.
type Varnish struct {
	srv *server
}

// StartVarnish starts a Varnish container with the VCL of opts and waits until it
// answers HTTP. The caller must Close it.
//
// The container runs in the host's network namespace (`--network host`), so Varnish
// reaches a backend on this machine's loopback and listens on a loopback port of its
// own, kept across Stop and Start. That needs a Docker engine on this machine (Linux),
// not one in a VM (Docker Desktop): there Varnish does not answer and StartVarnish says
// so.
func StartVarnish(ctx context.Context, opts VarnishOptions) (*Varnish, error) {
	image := opts.Image
	if image == "" {
		image = imageFromEnv(EnvVarnishImage, DefaultVarnishImage)
	}
	vcl := opts.VCL
	if len(vcl) == 0 {
		var err error
		if vcl, err = ShippedVCL(); err != nil {
			return nil, err
		}
	}
	vcl, err := configureVCL(vcl, opts.Backend, opts.PurgeACL)
	if err != nil {
		return nil, err
	}
	var lastErr error
	// The port is chosen before varnishd binds it; someone else may take it first.
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		cmd := append([]string{"varnishd", "-F", "-f", varnishVCLPath,
			"-a", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			// The management interface, on a loopback port of the kernel's choosing.
			"-T", "127.0.0.1:0",
			"-s", "malloc,64m"}, opts.Args...)
		ctr, err := testcontainers.Run(ctx, image,
			testcontainers.WithCmd(cmd...),
			testcontainers.WithFiles(testcontainers.ContainerFile{
				Reader: bytes.NewReader(vcl), ContainerFilePath: varnishVCLPath, FileMode: 0o644}),
			testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
				hc.NetworkMode = "host"
			}),
		)
		if err != nil {
			if ctr != nil {
				_ = ctr.Terminate(context.WithoutCancel(ctx))
			}
			return nil, startError("varnish", image, err)
		}
		v := &Varnish{srv: &server{ctr: ctr, host: "127.0.0.1", port: port, reach: ReachHostNetwork}}
		err = v.waitReady(ctx)
		if err == nil {
			return v, nil
		}
		_ = ctr.Terminate(context.WithoutCancel(ctx))
		lastErr = err
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	return nil, lastErr
}

// NewVarnish starts a Varnish container of the test's own (see StartVarnish) and
// terminates it when the test ends. Without Docker the test is skipped with the reason
// (failed in CI); a Varnish that cannot start fails it.
func NewVarnish(tb testing.TB, opts VarnishOptions) *Varnish {
	tb.Helper()
	if err := DockerAvailable(context.Background()); err != nil {
		skipOrFail(tb, "integration: %v; install and start Docker", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	v, err := StartVarnish(ctx, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := v.Close(context.Background()); err != nil {
			tb.Errorf("integration: terminate varnish: %v", err)
		}
	})
	return v
}

// ShippedVCL returns deploy/varnish/pgcache.vcl, the VCL users deploy, read from the
// repository this package is built from.
func ShippedVCL() ([]byte, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return nil, errors.New("integration: cannot locate the harness's source to find deploy/varnish/pgcache.vcl; set VarnishOptions.VCL")
	}
	path := filepath.Join(filepath.Dir(file), "..", "deploy", "varnish", "pgcache.vcl")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("integration: read the shipped VCL: %w (outside the repository, set VarnishOptions.VCL)", err)
	}
	return b, nil
}

var (
	vclBackendHost = regexp.MustCompile(`(?s)(backend default \{.*?\.host = )"[^"]*";`)
	vclBackendPort = regexp.MustCompile(`(?s)(backend default \{.*?\.port = )"[^"]*";`)
	vclPurgeACL    = regexp.MustCompile(`(?s)acl purgers \{.*?\n\}`)
)

// configureVCL points vcl's `backend default` at backend (host:port) and replaces the
// entries of its `acl purgers` with acl, each when given.
func configureVCL(vcl []byte, backend string, acl []string) ([]byte, error) {
	if backend != "" {
		host, port, err := net.SplitHostPort(backend)
		if err != nil {
			return nil, fmt.Errorf("integration: varnish backend %q: want host:port: %w", backend, err)
		}
		if !vclBackendHost.Match(vcl) || !vclBackendPort.Match(vcl) {
			return nil, errors.New(`integration: the VCL has no "backend default" with .host and .port to point at VarnishOptions.Backend; leave Backend empty to keep the VCL's`)
		}
		vcl = vclBackendHost.ReplaceAll(vcl, []byte(`${1}"`+host+`";`))
		vcl = vclBackendPort.ReplaceAll(vcl, []byte(`${1}"`+port+`";`))
	}
	if acl != nil {
		if !vclPurgeACL.Match(vcl) {
			return nil, errors.New(`integration: the VCL has no "acl purgers" for VarnishOptions.PurgeACL`)
		}
		var b strings.Builder
		b.WriteString("acl purgers {\n")
		for _, entry := range acl {
			addr, mask, hasMask := strings.Cut(entry, "/")
			if hasMask {
				fmt.Fprintf(&b, "\t%q/%s;\n", addr, mask)
			} else {
				fmt.Fprintf(&b, "\t%q;\n", addr)
			}
		}
		b.WriteString("}")
		vcl = vclPurgeACL.ReplaceAll(vcl, []byte(b.String()))
	}
	return vcl, nil
}

// waitReady waits until Varnish answers HTTP, or its container has stopped (a VCL that
// does not compile, a port taken), whose log it then returns.
//
// The probe is a PURGE without tags, which the shipped VCL answers itself (400), so that
// waiting sends nothing to the backend, whose requests tests count.
func (v *Varnish) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 10 * time.Second}
	delay := 50 * time.Millisecond
	for {
		req, err := http.NewRequestWithContext(ctx, "PURGE", v.PurgeURL(), nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return nil
		}
		if state, serr := v.srv.ctr.State(ctx); serr == nil && !state.Running {
			return fmt.Errorf("integration: varnish exited (status %d) before answering at %s: %s",
				state.ExitCode, v.Addr(), v.logTail(context.WithoutCancel(ctx)))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("integration: wait for varnish at %s: %w (last error: %v); the container runs with --network host, "+
				"which reaches this process's loopback only when the Docker engine runs on this machine (not in a VM)",
				v.Addr(), ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// logTail returns the last lines the container wrote.
func (v *Varnish) logTail(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rc, err := v.srv.ctr.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// Addr returns the host:port Varnish listens on, on this machine's loopback. It does
// not change across Stop and Start.
func (v *Varnish) Addr() string { return v.srv.addr() }

// URL returns the base URL clients request, without a trailing slash:
// "http://127.0.0.1:port".
func (v *Varnish) URL() string { return "http://" + v.Addr() }

// PurgeURL returns the URL PURGE requests go to (any path will do with the shipped
// VCL).
func (v *Varnish) PurgeURL() string { return v.URL() + "/" }

// Stop stops Varnish: its port refuses connections, as a node that is down does. Its
// cache is lost.
func (v *Varnish) Stop(ctx context.Context) error { return v.srv.stop(ctx) }

// Start starts a stopped Varnish at the same address, with an empty cache, and waits
// until it answers.
func (v *Varnish) Start(ctx context.Context) error {
	if err := v.srv.start(ctx); err != nil {
		return err
	}
	return v.waitReady(ctx)
}

// Close terminates the container.
func (v *Varnish) Close(ctx context.Context) error { return v.srv.terminate(ctx) }
