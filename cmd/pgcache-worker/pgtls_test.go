package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/integration"
)

// TestWorkerPostgresTLS: the worker reaches Postgres over TLS with the certificate
// verified (sslmode=verify-full and the CA file, in the connection string as libpq
// writes it), and its connections are encrypted (pg_stat_ssl). The control connects
// with another CA and is refused for the certificate.
func TestWorkerPostgresTLS(t *testing.T) {
	t.Parallel()
	pki, err := integration.NewPKI("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	other, err := integration.NewPKI("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pgServer := integration.NewPostgres(t, integration.PostgresOptions{TLS: &integration.PostgresTLS{Cert: pki.ServerCert, Key: pki.ServerKey}})
	dir := t.TempDir()
	for name, b := range map[string][]byte{"ca.pem": pki.CA, "other.pem": other.CA} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rd := servers.Redis(t)
	prefix := rd.Prefix(t)
	f := newFixtureDBOn(t, pgServer.NewDatabase(t), rd.Client(t), prefix)
	verified := func(ca string) string {
		return strings.Replace(f.pg.RoleURL, "sslmode=disable", "sslmode=verify-full&sslrootcert="+filepath.Join(dir, ca), 1)
	}
	if !strings.Contains(verified("ca.pem"), "verify-full") {
		t.Fatalf("the harness' URL %s has no sslmode to replace", f.pg.RoleURL)
	}
	if conn, err := pgx.Connect(t.Context(), verified("other.pem")); err == nil {
		conn.Close(context.Background())
		t.Fatal("control: a connection verifying another CA succeeded")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("control: %v, want a certificate error", err)
	}

	w := startRun(t, []string{"-tables", "widgets", "-slot", "s_" + f.pg.Name, "-status-interval", "100ms"},
		map[string]string{"PGCACHE_POSTGRES_URL": verified("ca.pem"), "PGCACHE_REDIS_ADDR": rd.Addr(), "PGCACHE_PREFIX": prefix})
	invalidates(t, f, w)
	var encrypted int
	err = f.db.Raw(`SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
		WHERE ssl AND usename = ? AND pid <> pg_backend_pid()`, integration.ReplicationRole).Scan(&encrypted).Error
	if err != nil {
		t.Fatal(err)
	}
	if encrypted == 0 {
		t.Fatal("no encrypted connection of the worker's role: the worker did not use TLS")
	}
}
