package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
	"github.com/testcontainers/testcontainers-go/wait"
)

// SentinelMaster is the master name the sentinels of NewSentinel watch.
const SentinelMaster = "pgcache"

// Sentinel is a Redis Sentinel setup: a master, a replica and three sentinels (quorum
// two, master down after 1s), each in a container reached at its container's address.
// Sentinels hand clients the master's address as the servers see it, so the test
// process must reach containers at their own addresses (as on Linux with the engine
// on the same host).
type Sentinel struct {
	Master, Replica *Redis
	sentinels       []*server
	addrs           []string
}

// NewSentinel starts a Sentinel setup that is removed when the test ends. It fails the
// test where container addresses cannot be reached (skips outside CI), and skips when
// the environment names existing servers.
func NewSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	if os.Getenv(EnvRedisAddr) != "" {
		tb.Skipf("integration: this test needs a Sentinel setup of its own; %s names an existing server", EnvRedisAddr)
	}
	requireDocker(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := startSentinel(ctx, tb)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func startSentinel(ctx context.Context, tb testing.TB) (*Sentinel, error) {
	master := NewRedis(tb, RedisOptions{Direct: true})
	if master.Reach() != ReachContainer {
		skipOrFail(tb, "integration: Sentinel needs container addresses reachable from the test (sentinels give clients the master's own address); here they are not")
	}
	host, port, err := net.SplitHostPort(master.Addr())
	if err != nil {
		return nil, err
	}
	replica := NewRedis(tb, RedisOptions{Direct: true, Args: []string{"--replicaof", host, port}})
	s := &Sentinel{Master: master, Replica: replica}
	conf := fmt.Sprintf("port 26379\nsentinel monitor %s %s %s 2\nsentinel down-after-milliseconds %[1]s 1000\nsentinel failover-timeout %[1]s 5000\nsentinel parallel-syncs %[1]s 1\n",
		SentinelMaster, host, port)
	image := imageFromEnv(EnvRedisImage, DefaultRedisImage)
	for range 3 {
		ctr, err := tcredis.Run(ctx, image,
			testcontainers.WithCmd("redis-server", "/etc/sentinel.conf", "--sentinel"),
			// Sentinel rewrites its configuration file: a copy of its own, writable.
			testcontainers.WithFiles(testcontainers.ContainerFile{Reader: bytes.NewReader([]byte(conf)), ContainerFilePath: "/etc/sentinel.conf", FileMode: 0o666}),
			testcontainers.WithExposedPorts("26379/tcp"),
			testcontainers.WithWaitStrategy(wait.ForLog("+monitor master")),
		)
		if ctr != nil {
			tb.Cleanup(func() { _ = ctr.Terminate(context.Background()) })
		}
		if err != nil {
			return nil, startError("redis sentinel", image, err)
		}
		ip, err := ctr.ContainerIP(ctx)
		if err != nil {
			return nil, err
		}
		s.sentinels = append(s.sentinels, &server{ctr: ctr, host: ip, port: 26379, reach: ReachContainer})
		s.addrs = append(s.addrs, net.JoinHostPort(ip, "26379"))
	}
	return s, s.waitReplicated(ctx)
}

// waitReplicated waits until the master lists its replica online and every sentinel
// knows the replica, so that a failover has somewhere to go.
func (s *Sentinel) waitReplicated(ctx context.Context) error {
	return waitFor(ctx, "integration: wait for the sentinels to know the replica", func(ctx context.Context) error {
		for _, a := range s.addrs {
			c := redis.NewSentinelClient(&redis.Options{Addr: a})
			replicas, err := c.Replicas(ctx, SentinelMaster).Result()
			c.Close()
			if err != nil {
				return err
			}
			if len(replicas) == 0 {
				return fmt.Errorf("sentinel %s knows no replica yet", a)
			}
		}
		return nil
	})
}

// Addrs returns the sentinels' addresses.
func (s *Sentinel) Addrs() []string { return append([]string(nil), s.addrs...) }

// Client returns a client that finds the master through the sentinels, honours context
// deadlines, and is closed when the test ends.
func (s *Sentinel) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: SentinelMaster, SentinelAddrs: s.Addrs(), ContextTimeoutEnabled: true})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// MasterAddr returns the address the sentinels give for the master now.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.addrs[0]})
	defer c.Close()
	hp, err := c.GetMasterAddrByName(ctx, SentinelMaster).Result()
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("integration: sentinel answered %q for the master", hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// WaitPromoted waits until the sentinels give the replica's address for the master
// and the replica answers as a master.
func (s *Sentinel) WaitPromoted(ctx context.Context) error {
	c := redis.NewClient(&redis.Options{Addr: s.Replica.Addr()})
	defer c.Close()
	return waitFor(ctx, "integration: wait for the replica's promotion", func(ctx context.Context) error {
		addr, err := s.MasterAddr(ctx)
		if err != nil {
			return err
		}
		if addr != s.Replica.Addr() {
			return fmt.Errorf("the sentinels still give %s", addr)
		}
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "role:master") {
			return fmt.Errorf("the replica is not a master yet")
		}
		return nil
	})
}
