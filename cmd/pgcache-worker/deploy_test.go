package main

import (
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/pgcache/pgcache/audit"
	"github.com/pgcache/pgcache/invalidator"
	"github.com/pgcache/pgcache/writeback"
)

const (
	alertRules = "../../deploy/prometheus/pgcache-alerts.yml"
	alertTests = "../../deploy/prometheus/pgcache-alerts_test.yml"
	dashboard  = "../../deploy/grafana/pgcache.json"
)

// libraryMetrics are the names the library's Prometheus exporter exports in the
// applications (histograms by their base name).
var libraryMetrics = []string{
	"pgcache_cache_hits_total", "pgcache_cache_misses_total", "pgcache_cache_redis_errors_total",
	"pgcache_cache_fills_refused_total", "pgcache_cache_read_duration_seconds", "pgcache_cache_writeback_pending",
}

// promtool returns promtool's path. Outside CI a missing promtool skips the test; in
// CI (CI=true, where .ci/run installs Debian's prometheus package) it fails it.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed, and CI must check the alert rules: apt-get install prometheus")
		}
		t.Skip("promtool is not installed (Debian: apt-get install --no-install-recommends prometheus); .ci/run installs it")
	}
	return p
}

// TestAlertRules: the shipped alert rules are valid, and fire (and stay quiet) on the
// synthetic series of their unit tests.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	bin := promtool(t)
	for _, args := range [][]string{{"check", "rules", alertRules}, {"test", "rules", alertTests}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// exportedMetrics returns the names of every metric the worker exports, with every
// option on (write-back flusher, auditor), read from the collectors themselves, and
// the library's exporter's.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	w, err := invalidator.NewWorker(rdb, workerOptions(config{postgres: "postgres://127.0.0.1:1/x", slot: "s", publication: "p", prefix: "pgc",
		maxTxChanges: 1}, []string{"t"}, nil, log))
	if err != nil {
		t.Fatal(err)
	}
	gdb, err := gorm.Open(postgres.Open("postgres://127.0.0.1:1/x"), &gorm.Config{DisableAutomaticPing: true})
	if err != nil {
		t.Fatal(err)
	}
	flusher, err := writeback.NewFlusher(gdb, rdb, writeback.FlusherOptions{Prefix: "pgc", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	sdb, err := sql.Open("pgx", "postgres://127.0.0.1:1/x")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sdb.Close() })
	a, err := audit.New(rdb, sdb, audit.Options{Rate: 1})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	reg := prometheus.NewRegistry()
	registerMetrics(reg, w)
	registerFlusherMetrics(reg, flusher)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		names[f.GetName()] = true
	}
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, c := range []prometheus.Collector{newSlotCollector("postgres://127.0.0.1:1/x", "s", nil, log), deadLetterGauge(rdb, "pgc"), auditCollector(a)} {
		ch := make(chan *prometheus.Desc, 32)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := fqName.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("no name in %s", d)
			}
			names[m[1]] = true
		}
	}
	for _, n := range libraryMetrics {
		names[n] = true
	}
	return names
}

var metricName = regexp.MustCompile(`\bpgcache_[a-z0-9_]+`)

// checkNames fails for each name used in exprs that nobody exports.
func checkNames(t *testing.T, what string, exprs []string, known map[string]bool) {
	t.Helper()
	used := 0
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			used++
			base := n
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(n, suffix); ok && known[b] {
					base = b
				}
			}
			if !known[base] {
				t.Errorf("%s uses %s, which neither the worker nor the library exports (known: %v)", what, n, slices.Sorted(maps.Keys(known)))
			}
		}
	}
	if used == 0 {
		t.Errorf("%s: no metric names found: the check would prove nothing", what)
	}
}

// TestDashboardMetrics: the Grafana dashboard is valid JSON and every metric its
// queries use is exported by the worker or the library; so are the alert rules'.
func TestDashboardMetrics(t *testing.T) {
	t.Parallel()
	known := exportedMetrics(t)
	for _, want := range []string{"pgcache_lag_seconds", "pgcache_slot_streamed", "pgcache_writeback_backlog",
		"pgcache_writeback_dead_letters", "pgcache_audit_inconsistent_total"} {
		if !known[want] {
			t.Fatalf("the worker does not export %s; it exports %v", want, slices.Sorted(maps.Keys(known)))
		}
	}
	b, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "expr" {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(d)
	checkNames(t, dashboard, exprs, known)

	rules, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	var ruleLines []string
	for _, l := range strings.Split(string(rules), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			ruleLines = append(ruleLines, l)
		}
	}
	checkNames(t, alertRules, ruleLines, known)
}
