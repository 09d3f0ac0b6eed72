package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/writeback"
)

// Exit codes.
const (
	exitOK         = 0
	exitFailure    = 1
	exitConfig     = 2
	exitWalLevel   = 3
	exitPermission = 4
	exitNoTable    = 5
	exitNoRedis    = 6
)

// config is what the flags and the environment say.
type config struct {
	postgres, prefix, slot, publication, tables, listen, logLevel string
	redis                                                         redisConfig
	statusInterval, partitionCheck, redisCheck, standbySnapshot   time.Duration
	maxTxChanges                                                  int
	receiveBuffer                                                 int // cdc.Options.ReceiveBuffer

	// writeBack runs a write-back flusher beside the invalidator.
	writeBack         bool
	writeBackConsumer string
	claimAfter        time.Duration

	purge purgeConfig
	audit auditConfig // the coherence auditor (audit.go)
	args  []string    // after the flags (the deadletter command's ids)
}

// stringFlag defines a string flag whose default comes from an environment variable.
type stringFlag func(p *string, name, envName, def, usage string)

// redisFlags defines the flags and reads the environment that say how to reach Redis.
func redisFlags(c *redisConfig, str stringFlag, env *secrets) {
	str(&c.target, "redis", "PGCACHE_REDIS_ADDR", env.get("PGCACHE_REDIS_URL"),
		"Redis: host:port, comma-separated for Cluster (or for the sentinels, with -redis-sentinel-master), or a redis:// or rediss:// (TLS) URL with user, password and database; also $PGCACHE_REDIS_URL")
	str(&c.sentinelMaster, "redis-sentinel-master", "PGCACHE_REDIS_SENTINEL_MASTER", "", "the master name, when -redis names Redis Sentinels")
	str(&c.caFile, "redis-ca-file", "PGCACHE_REDIS_CA_FILE", "", "PEM file of the CA that signed the Redis server's certificate (rediss:// only; default: the system's roots)")
	str(&c.certFile, "redis-cert-file", "PGCACHE_REDIS_CERT_FILE", "", "PEM client certificate, for a Redis that requires one (rediss:// only)")
	str(&c.keyFile, "redis-key-file", "PGCACHE_REDIS_KEY_FILE", "", "PEM key of -redis-cert-file")
	// Secrets only from the environment (or files it names), never from flags that ps shows.
	c.username = env.get("PGCACHE_REDIS_USERNAME")
	c.password = env.get("PGCACHE_REDIS_PASSWORD")
	c.sentinelPassword = env.get("PGCACHE_REDIS_SENTINEL_PASSWORD")
}

func parse(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("pgcache-worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := secrets{getenv: getenv}
	str := func(p *string, name, envName, def, usage string) {
		if v := env.get(envName); v != "" {
			def = v
		}
		fs.StringVar(p, name, def, usage+" ($"+envName+")")
	}
	str(&c.postgres, "postgres", "PGCACHE_POSTGRES_URL", "",
		"Postgres connection string of a role with REPLICATION; TLS as libpq's sslmode=verify-full&sslrootcert=ca.pem. Keep passwords out of flags: $PGCACHE_POSTGRES_URL or $PGCACHE_POSTGRES_URL_FILE")
	redisFlags(&c.redis, str, &env)
	str(&c.prefix, "prefix", "PGCACHE_PREFIX", "pgc", "key prefix, as in the applications' readthrough.Options.Prefix")
	str(&c.slot, "slot", "PGCACHE_SLOT", "pgcache", "replication slot name")
	str(&c.publication, "publication", "PGCACHE_PUBLICATION", "pgcache", "publication name")
	str(&c.tables, "tables", "PGCACHE_TABLES", "", `tables to watch, comma-separated: "table" or "schema.table"`)
	str(&c.listen, "listen", "PGCACHE_LISTEN", ":9187", "address for /healthz, /readyz and /metrics")
	str(&c.logLevel, "log-level", "PGCACHE_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&c.writeBackConsumer, "writeback-consumer", "PGCACHE_WRITEBACK_CONSUMER", "",
		"this flusher's name in the journal's consumer group; keep it stable per replica so a restart takes its entries back at once (default: host, pid and random bytes)")
	var intervalStr, claimStr, partitionStr, maxTxStr, redisCheckStr, snapshotStr, rcvbufStr string
	str(&redisCheckStr, "redis-check-interval", "PGCACHE_REDIS_CHECK_INTERVAL", "1s",
		"how often to read the Redis masters' run ids: after a failover or a restart, which may have lost acknowledged deletions, the tables are flushed; 0 turns it off (safe only with one Redis on appendfsync always)")
	str(&intervalStr, "status-interval", "PGCACHE_STATUS_INTERVAL", "10s", "how often to confirm the position to Postgres")
	str(&partitionStr, "partition-check", "PGCACHE_PARTITION_CHECK", "1s",
		"how often to read the partitions of partitioned tables: attaching, detaching or dropping one invalidates the table within about this long")
	str(&snapshotStr, "standby-snapshot-interval", "PGCACHE_STANDBY_SNAPSHOT_INTERVAL", "1s",
		"how often, while changes arrive, to log the running transactions (pg_log_standby_snapshot, Postgres 16+, EXECUTE granted to the role) so that a restart decodes little WAL it had confirmed; 0 turns it off")
	str(&rcvbufStr, "receive-buffer", "PGCACHE_RECEIVE_BUFFER", "0",
		"the replication socket's receive buffer in bytes, 0 for the kernel's sizing (the default); a small one (such as 32768) lets changes travel in large TCP segments, which helped narrow rows and hurt wide ones here: measure yours")
	str(&maxTxStr, "max-tx-changes", "PGCACHE_MAX_TX_CHANGES", "100000",
		"row changes kept per transaction; a larger transaction invalidates its tables whole, in bounded memory")
	finishPurge := purgeFlags(str)
	writeBackEnv, err := envBool(getenv, "PGCACHE_WRITEBACK")
	if err != nil {
		return c, err
	}
	fs.BoolVar(&c.writeBack, "writeback", writeBackEnv, "also flush the write-back writes of the applications under -prefix to Postgres ($PGCACHE_WRITEBACK)")
	str(&claimStr, "writeback-claim-after", "PGCACHE_WRITEBACK_CLAIM_AFTER", "30s",
		"how long a journal entry held by a flusher that stopped may wait before this one claims it")
	auditFlags(&c.audit, str)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.args = fs.Args()
	if env.err != nil {
		return c, env.err
	}
	if err := finishPurge(&c.purge); err != nil {
		return c, err
	}
	if c.statusInterval, err = time.ParseDuration(intervalStr); err != nil {
		return c, fmt.Errorf("-status-interval %q: %v", intervalStr, err)
	}
	if c.claimAfter, err = time.ParseDuration(claimStr); err != nil {
		return c, fmt.Errorf("-writeback-claim-after %q: %v", claimStr, err)
	}
	if c.partitionCheck, err = time.ParseDuration(partitionStr); err != nil || c.partitionCheck <= 0 {
		return c, fmt.Errorf("-partition-check %q: want a positive duration such as 1s", partitionStr)
	}
	if c.redisCheck, err = time.ParseDuration(redisCheckStr); err != nil || c.redisCheck < 0 {
		return c, fmt.Errorf("-redis-check-interval %q: want a duration such as 1s, or 0 for off", redisCheckStr)
	}
	if c.redisCheck == 0 {
		c.redisCheck = -1 // WorkerOptions: negative is off
	}
	if c.standbySnapshot, err = time.ParseDuration(snapshotStr); err != nil || c.standbySnapshot < 0 {
		return c, fmt.Errorf("-standby-snapshot-interval %q: want a duration such as 1s, or 0 for off", snapshotStr)
	}
	if c.standbySnapshot == 0 {
		c.standbySnapshot = -1 // cdc.Options: negative is off
	}
	if c.receiveBuffer, err = strconv.Atoi(rcvbufStr); err != nil || c.receiveBuffer < 0 {
		return c, fmt.Errorf("-receive-buffer %q: want a number of bytes such as 32768, or 0 for the kernel's sizing", rcvbufStr)
	}
	if c.maxTxChanges, err = strconv.Atoi(maxTxStr); err != nil || c.maxTxChanges <= 0 {
		return c, fmt.Errorf("-max-tx-changes %q: want a positive number of row changes", maxTxStr)
	}
	if err := c.audit.parse(); err != nil {
		return c, err
	}
	switch {
	case c.postgres == "":
		return c, errors.New("-postgres (or $PGCACHE_POSTGRES_URL) is required")
	case c.redis.target == "":
		return c, errors.New("-redis (or $PGCACHE_REDIS_ADDR) is required")
	}
	return c, nil
}

// envBool reads a boolean environment variable; unset is false.
func envBool(getenv func(string) string, name string) (bool, error) {
	v := getenv(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("$%s=%q: want true or false", name, v)
	}
	return b, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := parse(args, getenv, stderr)
	if err == nil && cfg.tables == "" {
		err = errors.New("-tables (or $PGCACHE_TABLES) is required: name the tables whose rows are cached")
	}
	if err != nil {
		fmt.Fprintln(stderr, "pgcache-worker:", err)
		return exitConfig
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		fmt.Fprintln(stderr, "pgcache-worker: -log-level:", err)
		return exitConfig
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	rdb, err := cfg.redis.client()
	if err != nil {
		fmt.Fprintln(stderr, "pgcache-worker:", err)
		return exitConfig
	}
	defer rdb.Close()
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = rdb.Ping(pingCtx).Err()
	cancel()
	if err != nil {
		log.Error("redis unreachable at start", slog.String("redis", cfg.redis.display()), slog.Any("error", err))
		return exitNoRedis
	}

	tables := splitTables(cfg.tables)
	purger, err := cfg.purge.purger(log)
	if err != nil {
		log.Error("bad configuration", slog.Any("error", err))
		return exitConfig
	}
	w, err := invalidator.NewWorker(rdb, workerOptions(cfg, tables, purger, log))
	if err != nil {
		log.Error("bad configuration", slog.Any("error", err))
		return exitConfig
	}
	var flusher *writeback.Flusher
	if cfg.writeBack {
		var closeDB func()
		var ok bool
		if flusher, closeDB, ok = newFlusher(cfg, rdb, log); !ok {
			return exitConfig
		}
		defer closeDB()
	}

	auditor, closeAudit, err := newAuditor(cfg, rdb, log)
	if err != nil {
		log.Error("bad configuration", slog.Any("error", err))
		return exitConfig
	}
	defer closeAudit()

	registry := store.New(rdb, 3*time.Second, "worker-registry")
	versions := func(ctx context.Context) (map[string][]string, error) { return registry.Versions(ctx, cfg.prefix) }
	slot := newSlotCollector(cfg.postgres, cfg.slot, versions, log)
	defer slot.close()
	h := handler(w, flusher, slot, deadLetterGauge(rdb, cfg.prefix), auditCollector(auditor))
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		log.Error("listen", slog.String("addr", cfg.listen), slog.Any("error", err))
		return exitConfig
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	log.Info("pgcache-worker starting", slog.String("http", ln.Addr().String()), slog.String("slot", cfg.slot), slog.Any("tables", tables))
	return exitCode(log, serve(ctx, srv, ln, w, flusher, auditRun(auditor),
		func(ctx context.Context) error { return slot.warnUnpublished(ctx, w.Ready) }))
}

// splitTables reads -tables: names separated by commas.
func splitTables(list string) []string {
	var tables []string
	for _, t := range strings.Split(list, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tables = append(tables, t)
		}
	}
	return tables
}

func workerOptions(cfg config, tables []string, purger invalidator.Purger, log *slog.Logger) invalidator.WorkerOptions {
	return invalidator.WorkerOptions{
		Postgres: cfg.postgres,
		Stream: cdc.Options{
			Slot: cfg.slot, Publication: cfg.publication, Tables: tables,
			StatusInterval: cfg.statusInterval, PartitionCheckInterval: cfg.partitionCheck,
			MaxTxChanges: cfg.maxTxChanges, StandbySnapshotInterval: cfg.standbySnapshot,
			ReceiveBuffer: cfg.receiveBuffer, Logger: log,
		},
		Invalidator:         invalidator.Options{Prefix: cfg.prefix, Logger: log, Purger: purger, PurgeTimeout: cfg.purge.timeout, RepurgeAfter: cfg.purge.repurge},
		ServerCheckInterval: cfg.redisCheck,
	}
}

// newFlusher opens the database for -writeback and returns its flusher and what closes
// the database. ok is false, the error logged, when the configuration is bad.
func newFlusher(cfg config, rdb redis.UniversalClient, log *slog.Logger) (flusher *writeback.Flusher, closeDB func(), ok bool) {
	db, err := gorm.Open(postgres.Open(cfg.postgres), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		log.Error("bad configuration", slog.String("flag", "-postgres"), slog.Any("error", err))
		return nil, nil, false
	}
	closeDB = func() {}
	if sqlDB, err := db.DB(); err == nil {
		closeDB = func() { sqlDB.Close() }
	}
	flusher, err = writeback.NewFlusher(db, rdb, writeback.FlusherOptions{
		Prefix: cfg.prefix, Consumer: cfg.writeBackConsumer, ClaimAfter: cfg.claimAfter, Logger: log,
	})
	if err != nil {
		closeDB()
		log.Error("bad configuration", slog.Any("error", err))
		return nil, nil, false
	}
	return flusher, closeDB, true
}

// handler serves /healthz, /readyz (ready while the worker streams) and /metrics, from a
// registry of the worker's own.
func handler(w *invalidator.Worker, flusher *writeback.Flusher, collectors ...prometheus.Collector) http.Handler {
	reg := prometheus.NewRegistry()
	registerMetrics(reg, w)
	for _, c := range collectors {
		if c != nil {
			reg.MustRegister(c)
		}
	}
	if flusher != nil {
		registerFlusherMetrics(reg, flusher)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprintln(rw, "ok") })
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
		if !w.Ready() {
			http.Error(rw, "not streaming", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, "ready")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// serve runs the HTTP server, the worker, the flusher (if any) and more (the auditor)
// until ctx ends or one of them fails, and returns the first error. A worker that
// stops while ctx lives is an error.
func serve(ctx context.Context, srv *http.Server, ln net.Listener, w *invalidator.Worker, flusher *writeback.Flusher, more ...func(context.Context) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdownCtx)
	})
	g.Go(func() error {
		err := w.Run(gctx)
		if err == nil && ctx.Err() == nil {
			err = errors.New("worker stopped")
		}
		return err
	})
	if flusher != nil {
		// Run returns nil once ctx ends and the entries it holds are applied.
		g.Go(func() error { return flusher.Run(gctx) })
	}
	for _, f := range more {
		if f != nil {
			g.Go(func() error { return f(gctx) })
		}
	}
	return g.Wait()
}

// exitCode logs how the worker ended and returns the exit code that says so.
func exitCode(log *slog.Logger, err error) int {
	switch {
	case err == nil:
		log.Info("pgcache-worker stopped")
		return exitOK
	case errors.Is(err, cdc.ErrWalLevel):
		log.Error("wal_level is not logical: set wal_level = logical in postgresql.conf and restart Postgres", slog.Any("error", err))
		return exitWalLevel
	case errors.Is(err, cdc.ErrPermission):
		log.Error("missing privilege", slog.Any("error", err))
		return exitPermission
	case errors.Is(err, cdc.ErrTableMissing):
		log.Error("table missing", slog.Any("error", err))
		return exitNoTable
	case errors.Is(err, cdc.ErrConfig):
		log.Error("bad configuration", slog.Any("error", err))
		return exitConfig
	default:
		log.Error("pgcache-worker failed", slog.Any("error", err))
		return exitFailure
	}
}

// registerMetrics exports the worker's Stats snapshots; nothing is counted twice.
func registerMetrics(reg *prometheus.Registry, w *invalidator.Worker) {
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "pgcache", Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "pgcache", Name: name, Help: help}, f))
	}
	gauge("slot_active", "1 while the worker streams from the slot.", func() float64 {
		if w.Ready() {
			return 1
		}
		return 0
	})
	gauge("confirmed_lsn", "Position confirmed to the slot as handled.", func() float64 { return float64(w.StreamStats().ConfirmedLSN) })
	gauge("lag_bytes", "Server WAL end seen minus the confirmed position.", func() float64 {
		s := w.StreamStats()
		if s.ReceivedLSN < s.ConfirmedLSN {
			return 0
		}
		return float64(s.ReceivedLSN - s.ConfirmedLSN)
	})
	gauge("lag_seconds", "0 when every change seen is handled; else seconds since the commit of the last transaction handled.", func() float64 {
		s := w.StreamStats()
		if s.ReceivedLSN <= s.ConfirmedLSN || s.LastCommitTime.IsZero() {
			return 0
		}
		return time.Since(s.LastCommitTime).Seconds()
	})
	counter("transactions_total", "Transactions handled.", func() float64 { return float64(w.Stats().Transactions) })
	counter("changes_total", "Row changes handled.", func() float64 { return float64(w.Stats().Changes) })
	counter("keys_deleted_total", "Row keys deleted.", func() float64 { return float64(w.Stats().KeysDeleted) })
	counter("lookup_keys_deleted_total", "Lookup entries deleted (unique and list lookups).", func() float64 { return float64(w.Stats().LookupKeysDeleted) })
	counter("tables_flushed_total", "Whole-table invalidations.", func() float64 { return float64(w.Stats().TablesFlushed) })
	counter("redis_errors_total", "Failed Redis attempts.", func() float64 { return float64(w.Stats().Errors) })
	counter("reconnects_total", "Reconnections to Postgres.", func() float64 { return float64(w.StreamStats().Reconnects) })
	counter("redis_server_changes_total", "Redis failovers and restarts seen, each followed by a flush of the tables.", func() float64 { return float64(w.Stats().ServerChanges) })
	counter("purged_total", "Tags purged from the CDN (-purge-varnish), second purges and retries included.", func() float64 { return float64(w.Stats().Purged) })
	counter("purge_errors_total", "CDN purges that failed or outlasted -purge-timeout, at once or retried from the purge stream.", func() float64 { return float64(w.Stats().PurgeErrors) })
	gauge("purges_pending", "Entries in the purge stream (purges to retry, second purges; up to 256 tags each), as last read.", func() float64 { return float64(w.Stats().PurgesPending) })
	gauge("purge_delay_seconds", "How late the most overdue entry of the purge stream was, as last read: it grows while CDN purges fail.", func() float64 { return w.Stats().PurgeDelay.Seconds() })
}

// registerFlusherMetrics exports the write-back flusher's counters and its backlog.
func registerFlusherMetrics(reg *prometheus.Registry, f *writeback.Flusher) {
	counter := func(name, help string, get func(writeback.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "pgcache", Subsystem: "writeback", Name: name, Help: help},
			func() float64 { return float64(get(f.Stats())) }))
	}
	counter("applied_total", "Rows written to Postgres.", func(s writeback.Stats) uint64 { return s.Applied })
	counter("batches_total", "Postgres transactions committed.", func(s writeback.Stats) uint64 { return s.Batches })
	counter("superseded_total", "Journal entries skipped: a newer write of the row was pending, or a replay.", func(s writeback.Stats) uint64 { return s.Superseded })
	counter("dead_letters_total", "Writes given up on and moved to the dead-letter stream.", func(s writeback.Stats) uint64 { return s.DeadLettered })
	counter("errors_total", "Failures of Redis or Postgres, retried.", func(s writeback.Stats) uint64 { return s.Errors })
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "pgcache", Subsystem: "writeback", Name: "backlog",
		Help: "Journal entries not yet applied (-1 when Redis does not answer)."},
		func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			n, err := f.Backlog(ctx)
			if err != nil {
				return -1
			}
			return float64(n)
		}))
}
