package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/readthrough"
)

// gadget has columns of many types, so that the auditor's comparison of a decoded
// entry with the driver's values meets the conversions the read path makes: numeric
// into a float and into a string, real into float32, timestamptz, date, bytea, uuid
// into a string, a NULL into a pointer and into a plain string.
type gadget struct {
	ID       int64 `gorm:"primaryKey"`
	Name     string
	Price    float64   `gorm:"type:numeric(10,2)"`
	Amount   string    `gorm:"type:numeric"`
	Ratio    float32   `gorm:"type:real"`
	At       time.Time `gorm:"type:timestamptz"`
	Day      time.Time `gorm:"type:date"`
	Data     []byte
	UID      string  `gorm:"type:uuid"`
	Note     *string `gorm:"type:text"`
	Nickname string  `gorm:"type:text"`
	Flag     bool
}

// gadgets is a gadgets table with rows 1..n, cached under a prefix of its own.
type gadgets struct {
	pg     *integration.Database
	db     *gorm.DB
	prefix string
	redis  *integration.Redis
	repo   *readthrough.Repository[gadget]
}

func newGadgets(t *testing.T, n int) *gadgets {
	t.Helper()
	pg := servers.Postgres(t).NewDatabase(t)
	rd := servers.Redis(t)
	g := &gadgets{pg: pg, db: fixture.Open(t, pg.RoleURL), prefix: rd.Prefix(t), redis: rd}
	if err := g.db.AutoMigrate(&gadget{}); err != nil {
		t.Fatal(err)
	}
	if err := g.db.Exec(`ALTER TABLE gadgets ALTER COLUMN nickname DROP NOT NULL`).Error; err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		if err := g.db.Exec(`INSERT INTO gadgets (id, name, price, amount, ratio, at, day, data, uid, note, nickname, flag)
			VALUES (?, ?, 12.50, '3.1400', 0.1, now(), current_date, '\x00ff', gen_random_uuid(), NULL, NULL, true)`, i, fmt.Sprint("g", i)).Error; err != nil {
			t.Fatal(err)
		}
	}
	cache, err := readthrough.New(g.db, rd.Client(t), readthrough.Options{Prefix: g.prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if g.repo, err = readthrough.Register[gadget](cache, readthrough.ModelOptions{TTL: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	return g
}

// startAuditing runs the worker on the gadgets table with the auditor on and waits
// until it is ready.
func (g *gadgets) startAuditing(t *testing.T, auditArgs ...string) *workerRun {
	t.Helper()
	w := startRun(t, append([]string{"-postgres", g.pg.RoleURL, "-redis", g.redis.Addr(), "-prefix", g.prefix,
		"-tables", "gadgets", "-slot", "s_" + g.pg.Name}, auditArgs...), nil)
	integration.Eventually(t, "/readyz 200", func() bool {
		resp, err := http.Get("http://" + w.addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return w
}

// metric returns the value of the metric line named name (with its labels) at /metrics,
// or -1.
func (w *workerRun) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + w.addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestAuditFindsStaleEntry: an entry written straight into Redis for a changed row (as
// a lost invalidation would leave it) is found by the auditor: counted under its table
// and logged with its key. The other rows, fresh, are compared and not counted.
func TestAuditFindsStaleEntry(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	g := newGadgets(t, 3)
	w := g.startAuditing(t, "-audit-rate", "50", "-audit-recheck", "1s")
	rdb := g.redis.Client(t)
	for id := int64(1); id <= 3; id++ {
		if _, ok, err := g.repo.Get(ctx, id); err != nil || !ok {
			t.Fatalf("get %d: %v %v", id, ok, err)
		}
	}
	key, _ := g.repo.Key(int64(2))
	old, err := rdb.Get(ctx, key).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "fresh entries compared", func() bool { return w.metric(t, "pgcache_audit_checked_total") >= 20 })
	if n := w.metric(t, `pgcache_audit_inconsistent_total{table="public.gadgets"}`); n != -1 {
		t.Fatalf("fresh entries: %v inconsistencies; logs:\n%s", n, w.logs)
	}

	if err := g.db.Exec(`UPDATE gadgets SET name = 'changed', price = 99.99 WHERE id = 2`).Error; err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "the worker to delete the changed row's entry", func() bool { return rdb.Exists(ctx, key).Val() == 0 })
	// The plant: the old entry back, bypassing the worker.
	if err := rdb.Set(ctx, key, old, 10*time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	integration.Eventually(t, "the stale entry counted", func() bool {
		return w.metric(t, `pgcache_audit_inconsistent_total{table="public.gadgets"}`) >= 1
	})
	logs := w.logs.String()
	if !strings.Contains(logs, `"level":"WARN","msg":"audit: cached entry differs from postgres past the recheck delay"`) ||
		!strings.Contains(logs, fmt.Sprintf(`"key":%q`, key)) || !strings.Contains(logs, `"columns":["name","price"]`) {
		t.Fatalf("no warning naming the key %s and the columns name, price; logs:\n%s", key, logs)
	}
	if w.metric(t, "pgcache_audit_rechecks_total") < 1 {
		t.Fatal("confirmed without a recheck")
	}
}

// TestAuditIgnoresLag is the control: under a burst of raw-SQL UPDATEs of cached rows,
// with readers refilling them, the auditor at a high rate sees mismatches (the rows
// changed and their invalidation was on its way: rechecks counted), and confirms none,
// since the healthy worker deletes each changed entry before the recheck.
func TestAuditIgnoresLag(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	g := newGadgets(t, 5)
	w := g.startAuditing(t, "-audit-rate", "200", "-audit-recheck", "5s")

	ctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	errs := make(chan error, 2)
	wg.Add(2)
	go func() { // readers keep the rows cached
		defer wg.Done()
		for ctx.Err() == nil {
			for id := int64(1); id <= 5; id++ {
				if _, _, err := g.repo.Get(ctx, id); err != nil && ctx.Err() == nil {
					errs <- err
					return
				}
			}
		}
	}()
	go func() { // the burst: every column of every row, new values each time
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			err := g.db.WithContext(ctx).Exec(`UPDATE gadgets SET name = ?, price = ?, amount = ?, ratio = ?, at = now(),
				day = current_date - ?::int, data = ?, uid = gen_random_uuid(), note = ?, nickname = ?, flag = NOT flag WHERE id = ?`,
				fmt.Sprint("n", i), float64(i%10000)/100, fmt.Sprint(i, ".50"), float32(i)/7, i%30, []byte{byte(i), 1},
				fmt.Sprint("note", i), fmt.Sprint("nick", i), int64(i%5+1)).Error
			if err != nil && ctx.Err() == nil {
				errs <- err
				return
			}
		}
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for w.metric(t, "pgcache_audit_rechecks_total") < 5 || w.metric(t, "pgcache_audit_checked_total") < 500 {
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 2 minutes: %v checked, %v rechecked; want 500 and 5 (the control needs mismatches from lag); logs:\n%s",
				w.metric(t, "pgcache_audit_checked_total"), w.metric(t, "pgcache_audit_rechecks_total"), w.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	wg.Wait()
	// Then the rows stay as the burst left them, cached by a last read once their
	// invalidations have landed: entries that no longer change, which a comparison
	// that mistook a conversion for a difference would confirm.
	time.Sleep(3 * time.Second)
	for id := int64(1); id <= 5; id++ {
		if _, _, err := g.repo.Get(t.Context(), id); err != nil {
			t.Fatal(err)
		}
	}
	checked := w.metric(t, "pgcache_audit_checked_total")
	integration.Eventually(t, "the quiet rows compared", func() bool { return w.metric(t, "pgcache_audit_checked_total") >= checked+300 })
	// Every recheck queued so far is due within -audit-recheck.
	time.Sleep(6 * time.Second)
	if n := w.metric(t, `pgcache_audit_inconsistent_total{table="public.gadgets"}`); n != -1 {
		t.Fatalf("%v inconsistencies confirmed under a healthy worker (%v checked, %v rechecked); logs:\n%s",
			n, w.metric(t, "pgcache_audit_checked_total"), w.metric(t, "pgcache_audit_rechecks_total"), w.logs)
	}
	t.Logf("%v checked, %v rechecked, none confirmed", w.metric(t, "pgcache_audit_checked_total"), w.metric(t, "pgcache_audit_rechecks_total"))
}
