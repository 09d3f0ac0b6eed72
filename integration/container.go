package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// Reach says how this process reaches a harness server.
type Reach string

const (
	// ReachPublished: through the port Docker publishes on 127.0.0.1, which keeps the
	// server's address across restarts. Docker's userland proxy, when the engine uses
	// one, relays every round trip (about 150µs more each on a small machine).
	ReachPublished Reach = "published port"
	// ReachContainer: at the container's own address on its Docker network, nothing in
	// between, as a server on another host is reached. The address may change when the
	// container restarts; see PostgresOptions.Direct.
	ReachContainer Reach = "container address"
	// ReachExisting: an existing server named by the environment.
	ReachExisting Reach = "existing server"
)

// server is a container bound to a fixed host port, so that it keeps its address across
// stop/start, pause/unpause and restart, the way a real server does.
type server struct {
	ctr   testcontainers.Container
	host  string
	port  int
	reach Reach
}

// runFixedPort starts a container whose containerPort is published on a free host port
// chosen up front. The port can be taken by someone else between the choice and the
// start; that is retried a few times.
func runFixedPort(ctx context.Context, containerPort string,
	run func(bind testcontainers.CustomizeRequestOption) (testcontainers.Container, error),
) (*server, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		bind := testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			if hc.PortBindings == nil {
				hc.PortBindings = network.PortMap{}
			}
			hc.PortBindings[network.MustParsePort(containerPort)] = []network.PortBinding{
				{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(port)},
			}
		})
		ctr, err := run(bind)
		if err != nil {
			if ctr != nil {
				_ = ctr.Terminate(context.WithoutCancel(ctx))
			}
			lastErr = err
			if strings.Contains(err.Error(), "already allocated") || strings.Contains(err.Error(), "address already in use") {
				continue
			}
			return nil, err
		}
		host, err := ctr.Host(ctx)
		if err != nil {
			_ = ctr.Terminate(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("container host: %w", err)
		}
		if host == "localhost" {
			host = "127.0.0.1"
		}
		return &server{ctr: ctr, host: host, port: port, reach: ReachPublished}, nil
	}
	return nil, lastErr
}

// direct makes s reached at its container's own address and port (containerPort, as
// "5432/tcp"), if that address answers a TCP connect within a second; otherwise (an
// engine in a VM, a remote engine) s stays at its published port.
func (s *server) direct(ctx context.Context, containerPort string) {
	ip, err := s.ctr.ContainerIP(ctx)
	if err != nil || ip == "" {
		return
	}
	port, err := strconv.Atoi(strings.TrimSuffix(containerPort, "/tcp"))
	if err != nil {
		return
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return
	}
	_ = c.Close()
	s.host, s.port, s.reach = ip, port, ReachContainer
}

func (s *server) addr() string { return net.JoinHostPort(s.host, strconv.Itoa(s.port)) }

func (s *server) stop(ctx context.Context) error {
	if s == nil {
		return ErrNoContainer
	}
	timeout := 10 * time.Second
	return s.ctr.Stop(ctx, &timeout)
}

func (s *server) start(ctx context.Context) error {
	if s == nil {
		return ErrNoContainer
	}
	return s.ctr.Start(ctx)
}

func (s *server) pause(ctx context.Context) error {
	if s == nil {
		return ErrNoContainer
	}
	return s.docker(ctx, func(cli *testcontainers.DockerClient) error {
		// The kernel's freezer can fail to stop every process at once on a loaded
		// machine ("unable to freeze"); docker leaves the container running then, so
		// try again.
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			if _, err = cli.ContainerPause(ctx, s.ctr.GetContainerID(), client.ContainerPauseOptions{}); err == nil ||
				!strings.Contains(err.Error(), "unable to freeze") {
				return err
			}
			select {
			case <-ctx.Done():
				return err
			case <-time.After(100 * time.Millisecond):
			}
		}
		return err
	})
}

func (s *server) unpause(ctx context.Context) error {
	if s == nil {
		return ErrNoContainer
	}
	return s.docker(ctx, func(cli *testcontainers.DockerClient) error {
		_, err := cli.ContainerUnpause(ctx, s.ctr.GetContainerID(), client.ContainerUnpauseOptions{})
		return err
	})
}

// kill sends SIGKILL to the server's processes: a crash, with no shutdown work (no
// final fsync, no save). The container stays, stopped, for start.
func (s *server) kill(ctx context.Context) error {
	if s == nil {
		return ErrNoContainer
	}
	return s.docker(ctx, func(cli *testcontainers.DockerClient) error {
		_, err := cli.ContainerKill(ctx, s.ctr.GetContainerID(), client.ContainerKillOptions{Signal: "KILL"})
		return err
	})
}

func (s *server) docker(ctx context.Context, f func(*testcontainers.DockerClient) error) error {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer cli.Close()
	return f(cli)
}

func (s *server) terminate(ctx context.Context) error {
	if s == nil {
		return nil
	}
	return s.ctr.Terminate(ctx)
}

// waitFor retries probe until it succeeds or ctx ends.
func waitFor(ctx context.Context, what string, probe func(context.Context) error) error {
	delay := 50 * time.Millisecond
	for {
		err := probe(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}
