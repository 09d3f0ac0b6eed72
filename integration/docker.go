package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
)

// Environment variables read by the harness.
const (
	EnvPostgresImage = "PGCACHE_POSTGRES_IMAGE"
	EnvRedisImage    = "PGCACHE_REDIS_IMAGE"
	EnvPostgresURL   = "PGCACHE_TEST_POSTGRES_URL"
	EnvRedisAddr     = "PGCACHE_TEST_REDIS_ADDR"
)

// Default images, used when the environment names none.
const (
	DefaultPostgresImage = "postgres:17"
	DefaultRedisImage    = "redis:7.4"
)

// ErrNoContainer is returned by the fault helpers of a server the harness did not start
// (one named by the environment): it cannot be stopped or paused.
var ErrNoContainer = errors.New("integration: server is not a container started by the harness")

// inCI reports whether the tests run in CI, where a skipped integration test is a failure.
func inCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// skipOrFail skips the test outside CI and fails it in CI, naming the reason either way.
func skipOrFail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		tb.Fatalf("%s (CI=true: integration tests must run)", msg)
	}
	tb.Skip(msg)
}

// DockerAvailable reports why containers cannot be started, or nil when they can.
func DockerAvailable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("docker engine not reachable: %w", err)
	}
	return cli.Close()
}

func requireDocker(tb testing.TB) {
	tb.Helper()
	if err := DockerAvailable(context.Background()); err != nil {
		skipOrFail(tb, "integration: %v; install and start Docker, or set %s and %s to existing servers",
			err, EnvPostgresURL, EnvRedisAddr)
	}
}

func imageFromEnv(env, def string) string {
	if img := os.Getenv(env); img != "" {
		return img
	}
	return def
}

// freePort returns a TCP port that is free on the host at the time of the call. The
// harness binds containers to fixed host ports so that a stopped and restarted server
// keeps its address, as a real server does.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startError names the image and, when the image could not be pulled, the way out.
func startError(what, image string, err error) error {
	msg := err.Error()
	if strings.Contains(msg, "registry") || strings.Contains(msg, "pull") || strings.Contains(msg, "No such image") {
		return fmt.Errorf("integration: start %s from image %s: %w (no image registry reachable? run `eval \"$(scripts/env.sh)\"` to build images from Debian packages, or set %s and %s)",
			what, image, err, EnvPostgresImage, EnvRedisImage)
	}
	return fmt.Errorf("integration: start %s from image %s: %w", what, image, err)
}
