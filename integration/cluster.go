package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// RedisCluster is a Redis Cluster of three masters (no replicas), all in one container.
// Each node listens on a host port equal to its container port and announces
// 127.0.0.1, so the addresses the cluster hands out in its redirects are the ones the
// host reaches. It is safe for concurrent use.
type RedisCluster struct {
	ctr   testcontainers.Container
	addrs []string
}

// StartRedisCluster starts a three-master Redis Cluster. The caller must Close it.
func StartRedisCluster(ctx context.Context, opts RedisOptions) (*RedisCluster, error) {
	image := opts.Image
	if image == "" {
		image = imageFromEnv(EnvRedisImage, DefaultRedisImage)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		ports := make([]int, 3)
		for i := range ports {
			p, err := freePort()
			if err != nil {
				return nil, err
			}
			ports[i] = p
		}
		c, err := startCluster(ctx, image, ports)
		if err == nil {
			return c, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "already allocated") && !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, startError("redis cluster", image, lastErr)
}

func startCluster(ctx context.Context, image string, ports []int) (*RedisCluster, error) {
	var script strings.Builder
	var nodes, exposed []string
	bindings := network.PortMap{}
	for _, p := range ports {
		ps := strconv.Itoa(p)
		fmt.Fprintf(&script, "redis-server --port %s --cluster-enabled yes --cluster-config-file nodes-%s.conf "+
			"--cluster-announce-ip 127.0.0.1 --save '' --appendonly no --protected-mode no --daemonize yes --logfile /tmp/redis-%s.log\n", ps, ps, ps)
		fmt.Fprintf(&script, "until redis-cli -p %s ping >/dev/null 2>&1; do sleep 0.05; done\n", ps)
		nodes = append(nodes, "127.0.0.1:"+ps)
		exposed = append(exposed, ps+"/tcp")
		bindings[network.MustParsePort(ps+"/tcp")] = []network.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: ps}}
	}
	fmt.Fprintf(&script, "redis-cli --cluster create %s --cluster-replicas 0 --cluster-yes\n", strings.Join(nodes, " "))
	// Every node must know the whole layout, or a client that loads it from a node
	// still catching up maps some slots to no master.
	for _, p := range ports {
		fmt.Fprintf(&script, "until redis-cli -p %d cluster info | grep -q cluster_state:ok && "+
			"[ \"$(redis-cli -p %d cluster nodes | grep -c master)\" = %d ]; do sleep 0.05; done\n", p, p, len(ports))
	}
	script.WriteString("echo pgcache-cluster-ready\nexec tail -f /dev/null\n")

	ctr, err := testcontainers.Run(ctx, image,
		testcontainers.WithEntrypoint("/bin/sh", "-c", script.String()),
		testcontainers.WithCmd(),
		testcontainers.WithExposedPorts(exposed...),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			if hc.PortBindings == nil {
				hc.PortBindings = network.PortMap{}
			}
			for p, b := range bindings {
				hc.PortBindings[p] = b
			}
		}),
		testcontainers.WithWaitStrategy(wait.ForLog("pgcache-cluster-ready").WithStartupTimeout(time.Minute)),
	)
	if err != nil {
		if ctr != nil {
			_ = ctr.Terminate(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	c := &RedisCluster{ctr: ctr, addrs: nodes}
	probe := redis.NewClusterClient(&redis.ClusterOptions{Addrs: nodes})
	defer probe.Close()
	err = waitFor(ctx, "integration: wait for redis cluster", func(ctx context.Context) error {
		return probe.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() })
	})
	if err != nil {
		_ = c.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return c, nil
}

// NewRedisCluster starts a cluster for the test and terminates it when the test ends.
// Without Docker the test is skipped (failed in CI); with PGCACHE_TEST_REDIS_ADDR set it
// is skipped, since the harness then starts no containers.
func NewRedisCluster(tb testing.TB) *RedisCluster {
	tb.Helper()
	if os.Getenv(EnvRedisAddr) != "" {
		tb.Skipf("integration: this test needs a Redis Cluster container; %s names an existing server", EnvRedisAddr)
	}
	requireDocker(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := StartRedisCluster(ctx, RedisOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Close(context.Background()); err != nil {
			tb.Errorf("integration: terminate redis cluster: %v", err)
		}
	})
	return c
}

// Addrs returns the masters' addresses.
func (c *RedisCluster) Addrs() []string { return append([]string(nil), c.addrs...) }

// Client returns a cluster client that honours context deadlines, closed when the test
// ends.
func (c *RedisCluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.addrs, ContextTimeoutEnabled: true})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Close terminates the container.
func (c *RedisCluster) Close(ctx context.Context) error { return c.ctr.Terminate(ctx) }
