package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Persistence is how a Redis container persists writes.
type Persistence int

const (
	// PersistNone keeps data in memory only (the default): a restart loses everything.
	PersistNone Persistence = iota
	// PersistAOFEverySec appends every write to the AOF and fsyncs once a second.
	PersistAOFEverySec
	// PersistAOFAlways fsyncs the AOF before acknowledging each write, for durability
	// tests.
	PersistAOFAlways
)

func (p Persistence) args() []string {
	switch p {
	case PersistAOFEverySec:
		return []string{"--save", "", "--appendonly", "yes", "--appendfsync", "everysec"}
	case PersistAOFAlways:
		return []string{"--save", "", "--appendonly", "yes", "--appendfsync", "always"}
	default:
		return []string{"--save", "", "--appendonly", "no"}
	}
}

// shellArgs is args quoted for a shell command line.
func (p Persistence) shellArgs() []string {
	out := p.args()
	for i, a := range out {
		if a == "" {
			out[i] = "''"
		}
	}
	return out
}

// RedisOptions configure a Redis container. The zero value is ready to use.
type RedisOptions struct {
	// Image is the image to run. Empty means $PGCACHE_REDIS_IMAGE, else
	// DefaultRedisImage.
	Image string
	// Persistence is PersistNone unless set.
	Persistence Persistence
	// Direct reaches the server at its container's own address when that answers, as
	// PostgresOptions.Direct does.
	Direct bool
	// Args are more redis-server arguments, such as "--maxmemory", "10mb".
	Args []string
	// TLS, when set, makes the server speak TLS only, on its one port, with these PEM
	// files; the harness's clients then connect with TLS.Client.
	TLS *RedisTLS
	// SpareNodes, for a Cluster only, publishes that many more ports, on which
	// RedisCluster.AddMaster starts nodes later.
	SpareNodes int
}

// RedisTLS is what a TLS Redis is started with: its certificate and key, the CA that
// clients must present a certificate from when ClientCerts is set, and the client
// configuration the harness's own clients use (trusting the server's CA).
type RedisTLS struct {
	Cert, Key, CA []byte
	// ClientCerts makes the server require a client certificate signed by CA
	// (tls-auth-clients yes); otherwise clients need none.
	ClientCerts bool
	// Client is the TLS configuration of the harness's clients.
	Client *tls.Config
}

// redisTLSDir is where a TLS Redis finds its files in the container.
const redisTLSDir = "/etc/pgcache-tls"

func (t *RedisTLS) args() []string {
	if t == nil {
		return nil
	}
	auth := "no"
	if t.ClientCerts {
		auth = "yes"
	}
	return []string{"--port", "0", "--tls-port", "6379",
		"--tls-cert-file", redisTLSDir + "/server.pem", "--tls-key-file", redisTLSDir + "/server.key",
		"--tls-ca-cert-file", redisTLSDir + "/ca.pem", "--tls-auth-clients", auth}
}

func (t *RedisTLS) files() []testcontainers.ContainerFile {
	if t == nil {
		return nil
	}
	file := func(name string, b []byte) testcontainers.ContainerFile {
		return testcontainers.ContainerFile{Reader: bytes.NewReader(b), ContainerFilePath: redisTLSDir + "/" + name, FileMode: 0o644}
	}
	return []testcontainers.ContainerFile{file("server.pem", t.Cert), file("server.key", t.Key), file("ca.pem", t.CA)}
}

// Redis is a running Redis server: a container started by the harness, or an existing
// server named by PGCACHE_TEST_REDIS_ADDR. It is safe for concurrent use.
type Redis struct {
	srv  *server // nil for an existing server
	addr string
	tls  *tls.Config // the harness's clients' TLS configuration; nil for plain TCP
}

// StartRedis starts a Redis container. The caller must Close it.
func StartRedis(ctx context.Context, opts RedisOptions) (*Redis, error) {
	image := opts.Image
	if image == "" {
		image = imageFromEnv(EnvRedisImage, DefaultRedisImage)
	}
	srv, err := runFixedPort(ctx, "6379/tcp", func(bind testcontainers.CustomizeRequestOption) (testcontainers.Container, error) {
		args := append(append([]string{"redis-server"}, opts.Persistence.args()...), opts.TLS.args()...)
		ctr, err := tcredis.Run(ctx, image,
			testcontainers.WithCmd(append(args, opts.Args...)...),
			testcontainers.WithFiles(opts.TLS.files()...),
			// With TLS the module's readiness probe (a plain PING) cannot answer: the
			// log line says the server listens, and waitReady pings it over TLS.
			testcontainers.WithWaitStrategy(wait.ForLog("Ready to accept connections")),
			bind,
		)
		if ctr == nil {
			return nil, err
		}
		return ctr, err
	})
	if err != nil {
		return nil, startError("redis", image, err)
	}
	if opts.Direct {
		srv.direct(ctx, "6379/tcp")
	}
	r := &Redis{srv: srv, addr: srv.addr()}
	if opts.TLS != nil {
		r.tls = opts.TLS.Client
	}
	if err := r.waitReady(ctx); err != nil {
		_ = r.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return r, nil
}

// ExistingRedis uses the server at addr (host:port). Close does not stop it.
func ExistingRedis(ctx context.Context, addr string) (*Redis, error) {
	r := &Redis{addr: addr}
	if err := r.waitReady(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// NewRedis starts a Redis container of the test's own, for tests that stop or pause it,
// and terminates it when the test ends. Without Docker, or when the environment names an
// existing server, the test is skipped with the reason (failed in CI when Docker is
// missing).
func NewRedis(tb testing.TB, opts RedisOptions) *Redis {
	tb.Helper()
	if os.Getenv(EnvRedisAddr) != "" {
		tb.Skipf("integration: this test stops or pauses Redis and needs a container of its own; %s names an existing server", EnvRedisAddr)
	}
	requireDocker(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := StartRedis(ctx, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			tb.Errorf("integration: terminate redis: %v", err)
		}
	})
	return r
}

// Addr returns the server's host:port. It does not change when the server restarts
// (unless it is reached at its container's address: see RedisOptions.Direct).
func (r *Redis) Addr() string { return r.addr }

// Reach says how the server is reached.
func (r *Redis) Reach() Reach {
	if r.srv == nil {
		return ReachExisting
	}
	return r.srv.reach
}

func (r *Redis) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1, TLSConfig: r.tls})
	defer c.Close()
	return waitFor(ctx, "integration: wait for redis at "+r.addr, func(ctx context.Context) error {
		return c.Ping(ctx).Err()
	})
}

// Prefix returns a key prefix of the test's own, so tests can share one server. Keys
// under it are deleted when the test ends.
func (r *Redis) Prefix(tb testing.TB) string {
	tb.Helper()
	return testPrefix(tb, func(ctx context.Context, prefix string) {
		c := redis.NewClient(&redis.Options{Addr: r.addr, TLSConfig: r.tls})
		defer c.Close()
		// A test that stopped the server has nothing left to clean.
		_ = unlinkPrefix(ctx, c, prefix)
	})
}

// testPrefix returns a random key prefix for a test, and has clean delete its keys
// when the test ends.
func testPrefix(tb testing.TB, clean func(ctx context.Context, prefix string)) string {
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	prefix := "t" + hex.EncodeToString(b[:])
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		clean(ctx, prefix)
	})
	return prefix
}

// unlinkPrefix unlinks the keys of c's server under prefix.
func unlinkPrefix(ctx context.Context, c *redis.Client, prefix string) error {
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		c.Unlink(ctx, iter.Val())
	}
	return iter.Err()
}

// Client returns a client of the server that honours context deadlines, closed when the
// test ends.
func (r *Redis) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.addr, ContextTimeoutEnabled: true, TLSConfig: r.tls})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop stops the server. Its address stays reserved for Start.
func (r *Redis) Stop(ctx context.Context) error { return r.srv.stop(ctx) }

// Kill kills the server with SIGKILL, as a crash would: what it had not persisted is
// lost. Start brings it back at the same address.
func (r *Redis) Kill(ctx context.Context) error { return r.srv.kill(ctx) }

// Start starts a stopped server at the same address and waits until it answers.
func (r *Redis) Start(ctx context.Context) error {
	if err := r.srv.start(ctx); err != nil {
		return err
	}
	return r.waitReady(ctx)
}

// Pause freezes the server's processes: connections stay open and commands hang, as with
// a server that stopped answering.
func (r *Redis) Pause(ctx context.Context) error { return r.srv.pause(ctx) }

// Unpause resumes a paused server.
func (r *Redis) Unpause(ctx context.Context) error { return r.srv.unpause(ctx) }

// Close terminates the container; for an existing server it does nothing.
func (r *Redis) Close(ctx context.Context) error { return r.srv.terminate(ctx) }
