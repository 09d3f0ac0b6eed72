package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	ctr     testcontainers.Container
	addrs   []string
	persist Persistence // every node's, those AddMaster starts included

	mu      sync.Mutex
	spares  []int // published ports no node listens on yet (RedisOptions.SpareNodes)
	clients map[string]*redis.Client
}

// StartRedisCluster starts a three-master Redis Cluster. The caller must Close it.
func StartRedisCluster(ctx context.Context, opts RedisOptions) (*RedisCluster, error) {
	image := opts.Image
	if image == "" {
		image = imageFromEnv(EnvRedisImage, DefaultRedisImage)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		ports := make([]int, 3+opts.SpareNodes)
		for i := range ports {
			p, err := freePort()
			if err != nil {
				return nil, err
			}
			ports[i] = p
		}
		c, err := startCluster(ctx, image, ports[:3], ports[3:], opts.Persistence)
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

// clusterNode is the shell command starting a cluster node on port p in the container.
func clusterNode(p int, persist Persistence) string {
	return fmt.Sprintf("redis-server --port %d --cluster-enabled yes --cluster-config-file nodes-%d.conf --appenddirname aof-%d "+
		"--cluster-announce-ip 127.0.0.1 %s --protected-mode no --daemonize yes --logfile /tmp/redis-%d.log\n"+
		"until redis-cli -p %d ping >/dev/null 2>&1; do sleep 0.05; done\n", p, p, p, strings.Join(persist.shellArgs(), " "), p, p)
}

func startCluster(ctx context.Context, image string, ports, spares []int, persist Persistence) (*RedisCluster, error) {
	var script strings.Builder
	var nodes, exposed []string
	bindings := network.PortMap{}
	for _, p := range slices.Concat(ports, spares) {
		ps := strconv.Itoa(p)
		exposed = append(exposed, ps+"/tcp")
		bindings[network.MustParsePort(ps+"/tcp")] = []network.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: ps}}
	}
	for _, p := range ports {
		script.WriteString(clusterNode(p, persist))
		nodes = append(nodes, "127.0.0.1:"+strconv.Itoa(p))
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
		// Six servers and the cluster's handshake: a loaded two-core CI machine once took
		// longer than a minute.
		testcontainers.WithWaitStrategy(wait.ForLog("pgcache-cluster-ready").WithStartupTimeout(3*time.Minute)),
	)
	if err != nil {
		if ctr != nil {
			_ = ctr.Terminate(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	c := &RedisCluster{ctr: ctr, addrs: nodes, spares: spares, persist: persist}
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
	return NewRedisClusterWith(tb, RedisOptions{})
}

// NewRedisClusterWith is NewRedisCluster with options (SpareNodes, say).
func NewRedisClusterWith(tb testing.TB, opts RedisOptions) *RedisCluster {
	tb.Helper()
	if os.Getenv(EnvRedisAddr) != "" {
		tb.Skipf("integration: this test needs a Redis Cluster container; %s names an existing server", EnvRedisAddr)
	}
	requireDocker(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := StartRedisCluster(ctx, opts)
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
func (c *RedisCluster) Addrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.addrs...)
}

// Client returns a cluster client that honours context deadlines, closed when the test
// ends.
func (c *RedisCluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ContextTimeoutEnabled: true})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// AddMaster starts a node on one of the ports RedisOptions.SpareNodes published and
// joins it to the cluster as a master holding no slots (MoveSlot gives it some; until
// then clients, which learn the masters from CLUSTER SLOTS, do not see it). It returns
// the node's address once every node knows it as a master and the cluster is ok.
func (c *RedisCluster) AddMaster(ctx context.Context) (string, error) {
	c.mu.Lock()
	if len(c.spares) == 0 {
		c.mu.Unlock()
		return "", fmt.Errorf("integration: AddMaster: no spare port left; start the cluster with RedisOptions.SpareNodes")
	}
	p := c.spares[0]
	c.spares = c.spares[1:]
	c.mu.Unlock()
	addr := "127.0.0.1:" + strconv.Itoa(p)
	script := clusterNode(p, c.persist) + fmt.Sprintf("redis-cli --cluster add-node %s %s\n", addr, c.addrs[0])
	if err := c.exec(ctx, script); err != nil {
		return "", fmt.Errorf("integration: add node %s: %w", addr, err)
	}
	all := append(c.Addrs(), addr)
	err := waitFor(ctx, "integration: wait for the new master "+addr, func(ctx context.Context) error {
		for _, a := range all {
			nodes, err := c.node(a).ClusterNodes(ctx).Result()
			if err != nil {
				return err
			}
			if n := strings.Count(nodes, "master"); n != len(all) {
				return fmt.Errorf("%s knows %d masters, want %d", a, n, len(all))
			}
			info, err := c.node(a).ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("%s: cluster state not ok", a)
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.addrs = append(c.addrs, addr)
	c.mu.Unlock()
	return addr, nil
}

// MoveSlot migrates slot, with its keys, to the master at addr, as redis-cli --cluster
// reshard does: IMPORTING and MIGRATING, MIGRATE of every key, then SETSLOT NODE on
// every master.
func (c *RedisCluster) MoveSlot(ctx context.Context, slot int, addr string) error {
	to := c.node(addr)
	toID, err := to.ClusterMyID(ctx).Result()
	if err != nil {
		return fmt.Errorf("integration: move slot %d: %w", slot, err)
	}
	shards, err := to.ClusterShards(ctx).Result()
	if err != nil {
		return fmt.Errorf("integration: move slot %d: %w", slot, err)
	}
	var from *redis.Client
	var fromID string
	for _, sh := range shards {
		for _, r := range sh.Slots {
			if int(r.Start) > slot || slot > int(r.End) {
				continue
			}
			for _, n := range sh.Nodes {
				if n.Role == "master" {
					from, fromID = c.node(net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))), n.ID
				}
			}
		}
	}
	if from == nil {
		return fmt.Errorf("integration: move slot %d: no master holds it", slot)
	}
	if fromID == toID {
		return nil
	}
	host, port, _ := strings.Cut(addr, ":")
	steps := []func() error{
		func() error { return to.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID).Err() },
		func() error { return from.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID).Err() },
		func() error {
			for {
				ks, err := from.ClusterGetKeysInSlot(ctx, slot, 100).Result()
				if err != nil || len(ks) == 0 {
					return err
				}
				args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
				for _, k := range ks {
					args = append(args, k)
				}
				if err := from.Do(ctx, args...).Err(); err != nil {
					return err
				}
			}
		},
	}
	for _, a := range c.Addrs() {
		steps = append(steps, func() error { return c.node(a).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err() })
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("integration: move slot %d to %s: %w", slot, addr, err)
		}
	}
	return nil
}

// node returns a client of one node, closed with the container.
func (c *RedisCluster) node(addr string) *redis.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.clients == nil {
		c.clients = map[string]*redis.Client{}
	}
	if n, ok := c.clients[addr]; ok {
		return n
	}
	n := redis.NewClient(&redis.Options{Addr: addr})
	c.clients[addr] = n
	return n
}

// exec runs a shell script in the container.
func (c *RedisCluster) exec(ctx context.Context, script string) error {
	code, out, err := c.ctr.Exec(ctx, []string{"/bin/sh", "-c", script})
	if err != nil {
		return err
	}
	if code != 0 {
		b, _ := io.ReadAll(out)
		return fmt.Errorf("exit %d: %s", code, b)
	}
	return nil
}

// Close terminates the container.
func (c *RedisCluster) Close(ctx context.Context) error {
	c.mu.Lock()
	for _, n := range c.clients {
		_ = n.Close()
	}
	c.clients = nil
	c.mu.Unlock()
	return c.ctr.Terminate(ctx)
}

// Prefix returns a key prefix of the test's own, so tests can share the cluster. Keys
// under it are deleted from every master when the test ends.
func (c *RedisCluster) Prefix(tb testing.TB) string {
	tb.Helper()
	return testPrefix(tb, func(ctx context.Context, prefix string) {
		cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
		defer cc.Close()
		_ = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return unlinkPrefix(ctx, n, prefix) })
	})
}
