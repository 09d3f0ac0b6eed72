package integration_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/integration"
)

var servers integration.Shared

func TestMain(m *testing.M) { os.Exit(servers.Run(m)) }

func TestLogicalReplicationAsSuperuser(t *testing.T) {
	t.Parallel()
	db := servers.Postgres(t).NewDatabase(t)
	receiveOneChange(t, db.URL, db.Name)
}

func TestLogicalReplicationAsReplicationRole(t *testing.T) {
	t.Parallel()
	db := servers.Postgres(t).NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.RoleURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var super, repl bool
	if err := conn.QueryRow(ctx, `SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user`).Scan(&super, &repl); err != nil {
		t.Fatal(err)
	}
	if super || !repl {
		t.Fatalf("role %s: superuser=%v replication=%v, want a non-superuser with REPLICATION", integration.ReplicationRole, super, repl)
	}
	receiveOneChange(t, db.RoleURL, db.Name)
}

// receiveOneChange creates a table, a FOR TABLE publication and a persistent pgoutput
// slot as the user of connURL, commits one INSERT and reads it back from the slot.
func receiveOneChange(t *testing.T, connURL, dbName string) {
	t.Helper()
	// Slot names are global to the server, so each test's is its own.
	slotName := "slot_" + dbName
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		`CREATE TABLE widgets (id bigint PRIMARY KEY, name text NOT NULL)`,
		`CREATE PUBLICATION harness_pub FOR TABLE widgets`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	repl, err := pgconn.Connect(ctx, connURL+"&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close(context.Background())
	slot, err := pglogrepl.CreateReplicationSlot(ctx, repl, slotName, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication})
	if err != nil {
		t.Fatalf("create slot: %v", err)
	}
	var persistent bool
	if err := conn.QueryRow(ctx, `SELECT NOT temporary FROM pg_replication_slots WHERE slot_name = $1`, slotName).Scan(&persistent); err != nil || !persistent {
		t.Fatalf("slot %s persistent=%v err=%v", slotName, persistent, err)
	}
	start, err := pglogrepl.ParseLSN(slot.ConsistentPoint)
	if err != nil {
		t.Fatal(err)
	}
	if err := pglogrepl.StartReplication(ctx, repl, slotName, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'harness_pub'"},
	}); err != nil {
		t.Fatalf("start replication: %v", err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO widgets VALUES (42, 'sprocket')`); err != nil {
		t.Fatal(err)
	}

	for {
		msg, err := repl.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			t.Fatal(err)
		}
		lm, err := pglogrepl.Parse(xld.WALData)
		if err != nil {
			t.Fatal(err)
		}
		if ins, ok := lm.(*pglogrepl.InsertMessage); ok {
			cols := ins.Tuple.Columns
			if len(cols) != 2 || string(cols[0].Data) != "42" || string(cols[1].Data) != "sprocket" {
				t.Fatalf("insert carried %d columns, want (42, sprocket)", len(cols))
			}
			return
		}
	}
}

func TestRedisSetGet(t *testing.T) {
	t.Parallel()
	rd := servers.Redis(t)
	c := rd.Client(t)
	key := rd.Prefix(t) + ":greeting"
	ctx := context.Background()
	if err := c.Set(ctx, key, "hello", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, key).Result()
	if err != nil || got != "hello" {
		t.Fatalf("GET %s = %q, %v; want hello", key, got, err)
	}
}

func TestRedisStopStartPause(t *testing.T) {
	t.Parallel()
	rd := integration.NewRedis(t, integration.RedisOptions{Persistence: integration.PersistAOFAlways})
	addr := rd.Addr()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	if err := rd.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded against a stopped server")
	}
	if err := rd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if rd.Addr() != addr {
		t.Fatalf("address changed across restart: %s -> %s", addr, rd.Addr())
	}
	// appendfsync always: the acknowledged write survived the restart.
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("after restart GET k = %q, %v; want v", got, err)
	}

	if err := rd.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	err := c.Ping(ctx).Err()
	var netErr interface{ Timeout() bool }
	if !errors.As(err, &netErr) || !netErr.Timeout() {
		t.Fatalf("PING against a paused server = %v, want a timeout", err)
	}
	if err := rd.Unpause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after unpause: %v", err)
	}
}

func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	pg := integration.NewPostgres(t, integration.PostgresOptions{})
	db := pg.NewDatabase(t)
	addr := pg.Addr()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("a connection opened before the restart still works; the server did not restart")
	}
	conn.Close(ctx)
	if pg.Addr() != addr {
		t.Fatalf("address changed across restart: %s -> %s", addr, pg.Addr())
	}
	conn, err = pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatalf("reconnect at %s: %v", addr, err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("after restart: %d rows, %v; want 1", n, err)
	}
}

func TestPostgresWithoutLogicalDecoding(t *testing.T) {
	t.Parallel()
	pg := integration.NewPostgres(t, integration.PostgresOptions{Settings: map[string]string{"wal_level": "replica"}})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var level string
	if err := conn.QueryRow(ctx, `SHOW wal_level`).Scan(&level); err != nil || level != "replica" {
		t.Fatalf("wal_level = %q, %v; want replica", level, err)
	}
}

// TestDirect: servers started with Direct, the shared ones among them, answer at the
// address the harness gives, the container's own when it answers from here.
func TestDirect(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rd := integration.NewRedis(t, integration.RedisOptions{Direct: true})
	pg := integration.NewPostgres(t, integration.PostgresOptions{Direct: true})
	for name, s := range map[string]interface {
		Addr() string
		Reach() integration.Reach
	}{"redis": rd, "postgres": pg, "shared redis": servers.Redis(t), "shared postgres": servers.Postgres(t)} {
		if s.Reach() == integration.ReachExisting && strings.HasPrefix(name, "shared") {
			continue // named by the environment
		}
		switch s.Reach() {
		case integration.ReachContainer:
			if host, _, _ := strings.Cut(s.Addr(), ":"); host == "127.0.0.1" {
				t.Errorf("%s reached at its container's address, but that is %s", name, s.Addr())
			}
		case integration.ReachPublished:
			t.Logf("%s: the container's address does not answer from here; reached through the published port %s", name, s.Addr())
		default:
			t.Errorf("%s reached by %q", name, s.Reach())
		}
	}
	if err := rd.Client(t).Ping(ctx).Err(); err != nil {
		t.Errorf("redis at %s (%s): %v", rd.Addr(), rd.Reach(), err)
	}
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatalf("postgres at %s (%s): %v", pg.Addr(), pg.Reach(), err)
	}
	defer conn.Close(ctx)
	var one int
	if err := conn.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil || one != 1 {
		t.Errorf("SELECT 1 at %s = %d, %v", pg.Addr(), one, err)
	}
	t.Logf("redis at %s (%s), postgres at %s (%s)", rd.Addr(), rd.Reach(), pg.Addr(), pg.Reach())
}
