package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

// ReplicationRole is the non-superuser role, with LOGIN and REPLICATION, that owns every
// database the harness creates: what a least-privilege deployment of the worker uses.
const (
	ReplicationRole     = "pgcache_repl"
	replicationPassword = "pgcache_repl"
)

// PostgresOptions configure a Postgres container. The zero value is ready to use.
type PostgresOptions struct {
	// Image is the image to run. Empty means $PGCACHE_POSTGRES_IMAGE, else
	// DefaultPostgresImage.
	Image string
	// Settings are extra server settings, passed as "-c name=value". The harness always
	// sets wal_level=logical, max_replication_slots=20 and max_wal_senders=20; an entry
	// here overrides them (a test of a server without logical decoding sets
	// "wal_level": "replica").
	Settings map[string]string
	// Direct reaches the server at its container's own address when that answers,
	// rather than through the published port (see Reach): for measurements that must
	// not include Docker's port proxy. The address may change when the container
	// restarts, so a test that stops or restarts the server leaves it unset.
	Direct bool
	// TLS, when set, turns on ssl with this certificate and key (PEM) besides the
	// plain connections the harness makes (its URLs say sslmode=disable).
	TLS *PostgresTLS
}

// PostgresTLS is the server certificate and key of a Postgres with ssl on.
type PostgresTLS struct{ Cert, Key []byte }

// pgTLSInit runs at the server's first start (an init script, as root in the images
// scripts/build-images.sh makes, as postgres in the official ones): Postgres wants its
// key readable by its own user only.
const pgTLSInit = `cp /etc/pgcache-tls/server.pem "$PGDATA/server.crt"
cp /etc/pgcache-tls/server.key "$PGDATA/server.key"
chown postgres:postgres "$PGDATA/server.crt" "$PGDATA/server.key" 2>/dev/null || true
chmod 600 "$PGDATA/server.key"
echo "ssl = on" >>"$PGDATA/postgresql.conf"
`

func (t *PostgresTLS) files() []testcontainers.ContainerFile {
	if t == nil {
		return nil
	}
	file := func(path string, b []byte, mode int64) testcontainers.ContainerFile {
		return testcontainers.ContainerFile{Reader: bytes.NewReader(b), ContainerFilePath: path, FileMode: mode}
	}
	return []testcontainers.ContainerFile{
		file("/etc/pgcache-tls/server.pem", t.Cert, 0o644), file("/etc/pgcache-tls/server.key", t.Key, 0o644),
		file("/docker-entrypoint-initdb.d/pgcache-tls.sh", []byte(pgTLSInit), 0o755),
	}
}

// Postgres is a running Postgres server: a container started by the harness, or an
// existing server named by PGCACHE_TEST_POSTGRES_URL. It is safe for concurrent use.
type Postgres struct {
	srv      *server // nil for an existing server
	adminURL *url.URL
}

// StartPostgres starts a Postgres container. The caller must Close it.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	image := opts.Image
	if image == "" {
		image = imageFromEnv(EnvPostgresImage, DefaultPostgresImage)
	}
	settings := map[string]string{
		"wal_level":             "logical",
		"max_replication_slots": "20",
		"max_wal_senders":       "20",
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	names := make([]string, 0, len(settings))
	for k := range settings {
		names = append(names, k)
	}
	sort.Strings(names)
	var args []string
	for _, k := range names {
		args = append(args, "-c", k+"="+settings[k])
	}

	srv, err := runFixedPort(ctx, "5432/tcp", func(bind testcontainers.CustomizeRequestOption) (testcontainers.Container, error) {
		ctr, err := tcpostgres.Run(ctx, image,
			tcpostgres.WithUsername("postgres"),
			tcpostgres.WithPassword("postgres"),
			tcpostgres.WithDatabase("postgres"),
			testcontainers.WithCmdArgs(args...),
			testcontainers.WithFiles(opts.TLS.files()...),
			tcpostgres.BasicWaitStrategies(),
			bind,
		)
		if ctr == nil {
			return nil, err
		}
		return ctr, err
	})
	if err != nil {
		return nil, startError("postgres", image, err)
	}
	if opts.Direct {
		srv.direct(ctx, "5432/tcp")
	}
	p := &Postgres{srv: srv, adminURL: &url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword("postgres", "postgres"),
		Host:     srv.addr(),
		Path:     "/postgres",
		RawQuery: "sslmode=disable",
	}}
	if err := p.waitReady(ctx); err != nil {
		_ = p.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return p, nil
}

// ExistingPostgres uses the server at a superuser connection string. Close does not
// stop it.
func ExistingPostgres(ctx context.Context, connString string) (*Postgres, error) {
	u, err := url.Parse(connString)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("integration: %s must be a postgres:// URL, got %q", EnvPostgresURL, connString)
	}
	p := &Postgres{adminURL: u}
	if err := p.waitReady(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// NewPostgres starts a Postgres container of the test's own, for tests that stop or
// restart it, and terminates it when the test ends. Without Docker, or when the
// environment names an existing server, the test is skipped with the reason (failed in CI
// when Docker is missing).
func NewPostgres(tb testing.TB, opts PostgresOptions) *Postgres {
	tb.Helper()
	if os.Getenv(EnvPostgresURL) != "" {
		tb.Skipf("integration: this test stops or restarts Postgres and needs a container of its own; %s names an existing server", EnvPostgresURL)
	}
	requireDocker(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, err := StartPostgres(ctx, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := p.Close(context.Background()); err != nil {
			tb.Errorf("integration: terminate postgres: %v", err)
		}
	})
	return p
}

// URL returns a superuser connection string to the "postgres" database.
func (p *Postgres) URL() string { return p.adminURL.String() }

// Addr returns the server's host:port. It does not change when the server restarts
// (unless it is reached at its container's address: see PostgresOptions.Direct).
func (p *Postgres) Addr() string { return p.adminURL.Host }

// Reach says how the server is reached.
func (p *Postgres) Reach() Reach {
	if p.srv == nil {
		return ReachExisting
	}
	return p.srv.reach
}

func (p *Postgres) urlFor(user, password, db string) string {
	u := *p.adminURL
	if user != "" {
		u.User = url.UserPassword(user, password)
	}
	u.Path = "/" + db
	return u.String()
}

func (p *Postgres) connect(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, p.adminURL.String())
}

func (p *Postgres) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err := waitFor(ctx, "integration: wait for postgres at "+p.Addr(), func(ctx context.Context) error {
		conn, err := p.connect(ctx)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		return conn.Ping(ctx)
	})
	if err != nil {
		return err
	}
	return p.ensureRole(ctx)
}

// ensureRole creates the least-privilege replication role if it is missing. Tests in
// parallel may race to create it; losing the race is fine.
func (p *Postgres) ensureRole(ctx context.Context) error {
	conn, err := p.connect(ctx)
	if err != nil {
		return fmt.Errorf("integration: connect to postgres: %w", err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, fmt.Sprintf(
		`CREATE ROLE %s WITH LOGIN REPLICATION NOSUPERUSER PASSWORD '%s'`, ReplicationRole, replicationPassword))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42710" || pgErr.Code == "23505") { // duplicate_object, unique_violation
		err = nil
	}
	if err != nil {
		return fmt.Errorf("integration: create role %s: %w", ReplicationRole, err)
	}
	return nil
}

// Database is one database of its own for a test, owned by [ReplicationRole].
type Database struct {
	// Name is the database's name.
	Name string
	// URL connects as the superuser.
	URL string
	// RoleURL connects as ReplicationRole: LOGIN and REPLICATION, no superuser, owner of
	// the database (so it can create tables and FOR TABLE publications on them).
	RoleURL string

	pg *Postgres
}

// CreateDatabase creates a database with a fresh random name. The caller drops it.
func (p *Postgres) CreateDatabase(ctx context.Context) (*Database, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	name := "t_" + hex.EncodeToString(b[:])
	conn, err := p.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("integration: connect to postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE DATABASE %s OWNER %s`, name, ReplicationRole)); err != nil {
		return nil, fmt.Errorf("integration: create database: %w", err)
	}
	db := &Database{
		Name:    name,
		URL:     p.urlFor("", "", name),
		RoleURL: p.urlFor(ReplicationRole, replicationPassword, name),
		pg:      p,
	}
	// As the README's setup: the role may log running transactions, so that its
	// slots' restart_lsn follows the stream (cdc.Options.StandbySnapshotInterval).
	// Function privileges are per database.
	dbConn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		return nil, fmt.Errorf("integration: connect to database %s: %w", name, err)
	}
	defer dbConn.Close(ctx)
	_, err = dbConn.Exec(ctx, `GRANT EXECUTE ON FUNCTION pg_log_standby_snapshot() TO `+ReplicationRole)
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "42883" {
		err = nil // undefined_function: a Postgres before 16, named by the environment
	}
	if err != nil {
		return nil, fmt.Errorf("integration: grant pg_log_standby_snapshot to %s in %s: %w", ReplicationRole, name, err)
	}
	return db, nil
}

// NewDatabase creates a database for the test and drops it, with its replication slots,
// when the test ends.
func (p *Postgres) NewDatabase(tb testing.TB) *Database {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := p.CreateDatabase(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := db.Drop(ctx); err != nil {
			tb.Errorf("%v", err)
		}
	})
	return db
}

// Drop drops the database and the replication slots in it, ending their connections.
func (d *Database) Drop(ctx context.Context) error {
	conn, err := d.pg.connect(ctx)
	if err != nil {
		return fmt.Errorf("integration: drop database %s: %w", d.Name, err)
	}
	defer conn.Close(ctx)
	// A slot in use cannot be dropped; end its walsender first, then retry while it
	// lets go.
	err = waitFor(ctx, "integration: drop slots of "+d.Name, func(ctx context.Context) error {
		_, err := conn.Exec(ctx, `
			SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE database = $1 AND active_pid IS NOT NULL`, d.Name)
		if err != nil {
			return err
		}
		_, err = conn.Exec(ctx, `
			SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
			WHERE database = $1`, d.Name)
		return err
	})
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, d.Name)); err != nil {
		return fmt.Errorf("integration: drop database %s: %w", d.Name, err)
	}
	return nil
}

// Stop stops the server. Its address stays reserved for Start.
func (p *Postgres) Stop(ctx context.Context) error { return p.srv.stop(ctx) }

// Kill kills the server with SIGKILL, as a crash would: no shutdown checkpoint, every
// connection cut. Start brings it back at the same address after crash recovery
// (committed transactions and replication slots survive; a slot may come back at an
// older confirmed position, from its last checkpoint).
func (p *Postgres) Kill(ctx context.Context) error { return p.srv.kill(ctx) }

// Start starts a stopped or killed server at the same address and waits until it
// accepts connections.
func (p *Postgres) Start(ctx context.Context) error {
	if err := p.srv.start(ctx); err != nil {
		return err
	}
	return p.waitReady(ctx)
}

// Restart stops the server (fast shutdown) and starts it again at the same address.
func (p *Postgres) Restart(ctx context.Context) error {
	if err := p.Stop(ctx); err != nil {
		return fmt.Errorf("integration: stop postgres: %w", err)
	}
	return p.Start(ctx)
}

// Close terminates the container; for an existing server it does nothing.
func (p *Postgres) Close(ctx context.Context) error { return p.srv.terminate(ctx) }
