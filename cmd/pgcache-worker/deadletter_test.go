package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pgcache/pgcache/integration"
	"github.com/pgcache/pgcache/integration/fixture"
	"github.com/pgcache/pgcache/readthrough"
	"github.com/pgcache/pgcache/writepolicy"
)

// ledger is a write-back model whose table refuses negative amounts: a write with one
// can never be applied, and goes to the dead-letter stream.
type ledger struct {
	ID     int64 `gorm:"primaryKey"`
	Amount int64
}

// TestDeadLetterCommand: writes that violate a CHECK constraint are dead-lettered by
// the worker's flusher (pgcache_writeback_dead_letters counts them); deadletter list
// shows them (table and JSON); retry fails, and keeps the letter, while the cause
// remains, and applies the write once the constraint is gone, after which readers see
// it; drop removes a letter without applying it; unknown ids exit 1. The auditor,
// on in the same worker, compares the write-back model's entries.
func TestDeadLetterCommand(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pg := servers.Postgres(t).NewDatabase(t)
	rd := servers.Redis(t)
	prefix := rd.Prefix(t)
	db := fixture.Open(t, pg.RoleURL)
	if err := db.Exec(`CREATE TABLE ledgers (id bigint PRIMARY KEY, amount bigint NOT NULL CONSTRAINT amount_not_negative CHECK (amount >= 0))`).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(`INSERT INTO ledgers VALUES (6, 60)`).Error; err != nil {
		t.Fatal(err)
	}
	cache, err := readthrough.New(db, rd.Client(t), readthrough.Options{Prefix: prefix, RedisTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := readthrough.Register[ledger](cache, readthrough.ModelOptions{WritePolicy: writepolicy.WriteBack})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []ledger{{1, 10}, {5, -5}, {6, -6}} {
		if err := repo.Save(ctx, &l); err != nil {
			t.Fatal(err)
		}
	}
	flags := []string{"-postgres", pg.RoleURL, "-redis", rd.Addr(), "-prefix", prefix}
	w := startRun(t, append(flags, "-tables", "ledgers", "-slot", "s_"+pg.Name, "-writeback", "-writeback-consumer", "w1",
		"-audit-rate", "50", "-audit-recheck", "1s"), nil)
	integration.Eventually(t, "two dead letters", func() bool { return w.metric(t, "pgcache_writeback_dead_letters") == 2 })

	cmd := func(args ...string) (code int, stdout, stderr string) {
		var out, errOut bytes.Buffer
		code = deadletter(ctx, append(args[:1:1], append(append([]string(nil), flags...), args[1:]...)...), noEnv, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, out, errOut := cmd("list")
	key5, _ := repo.Key(int64(5))
	key6, _ := repo.Key(int64(6))
	if code != 0 || !strings.Contains(out, "ID") || !strings.Contains(out, key5) || !strings.Contains(out, key6) ||
		!strings.Contains(out, `"public"."ledgers"`) || !strings.Contains(out, "amount_not_negative") {
		t.Fatalf("list: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = cmd("list", "-json")
	var letters []letterJSON
	if err := json.Unmarshal([]byte(out), &letters); code != 0 || err != nil || len(letters) != 2 {
		t.Fatalf("list -json: exit %d, %v\n%s\n%s", code, err, out, errOut)
	}
	ids := map[string]string{}
	for _, l := range letters {
		ids[l.Key] = l.ID
		if !strings.Contains(l.Error, "amount_not_negative") || l.Attempts < 1 || l.FailedAt.IsZero() || l.Change == "" {
			t.Fatalf("letter %+v", l)
		}
	}

	// The cause is still there: retry fails and keeps the letter.
	code, _, errOut = cmd("retry", ids[key5])
	if code != exitAttention || !strings.Contains(errOut, "amount_not_negative") {
		t.Fatalf("retry before the fix: exit %d, want 1 naming the violation; stderr:\n%s", code, errOut)
	}
	if _, _, errOut = cmd("list"); w.metric(t, "pgcache_writeback_dead_letters") != 2 {
		t.Fatalf("the letter left after a failed retry; %s", errOut)
	}

	// Fixed: retry applies row 5's write; readers see it.
	if err := db.Exec(`ALTER TABLE ledgers DROP CONSTRAINT amount_not_negative`).Error; err != nil {
		t.Fatal(err)
	}
	if code, out, errOut = cmd("retry", ids[key5]); code != 0 || !strings.Contains(out, "retried "+ids[key5]) {
		t.Fatalf("retry: exit %d\n%s\n%s", code, out, errOut)
	}
	var amount int64
	if err := db.Raw(`SELECT amount FROM ledgers WHERE id = 5`).Scan(&amount).Error; err != nil || amount != -5 {
		t.Fatalf("row 5 in Postgres: amount %d, %v; want the retried write's -5", amount, err)
	}
	if l, ok, err := repo.Get(ctx, int64(5)); err != nil || !ok || l.Amount != -5 {
		t.Fatalf("Get(5) after the retry = %+v, %v, %v", l, ok, err)
	}

	// drop removes row 6's letter unapplied.
	if code, out, errOut = cmd("drop", ids[key6]); code != 0 || !strings.Contains(out, "dropped "+ids[key6]) {
		t.Fatalf("drop: exit %d\n%s\n%s", code, out, errOut)
	}
	if err := db.Raw(`SELECT amount FROM ledgers WHERE id = 6`).Scan(&amount).Error; err != nil || amount != 60 {
		t.Fatalf("row 6 in Postgres: amount %d, %v; want 60, its write dropped", amount, err)
	}
	if code, out, _ = cmd("list"); code != 0 || !strings.Contains(out, "no dead letters") {
		t.Fatalf("list after retry and drop: exit %d\n%s", code, out)
	}
	integration.Eventually(t, "the gauge back to 0", func() bool { return w.metric(t, "pgcache_writeback_dead_letters") == 0 })

	// The auditor, on beside, decodes the write-back model's entries (their envelope
	// names the version) and finds them as Postgres has them.
	for _, id := range []int64{1, 5, 6} {
		if _, _, err := repo.Get(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	integration.Eventually(t, "write-back entries compared", func() bool { return w.metric(t, "pgcache_audit_checked_total") >= 20 })
	if n := w.metric(t, `pgcache_audit_inconsistent_total{table="public.ledgers"}`); n != -1 {
		t.Fatalf("%v inconsistencies; logs:\n%s", n, w.logs)
	}

	// Unknown ids, and bad usage.
	for _, verb := range []string{"retry", "drop"} {
		if code, _, errOut = cmd(verb, "1-1"); code != exitAttention || !strings.Contains(errOut, "1-1") {
			t.Fatalf("%s of an unknown id: exit %d, want 1; stderr:\n%s", verb, code, errOut)
		}
	}
	if code, _, _ = cmd("retry"); code != exitConfig {
		t.Fatalf("retry without ids: exit %d, want 2", code)
	}
	if code, _, _ = cmd("retry", "-all"); code != exitOK {
		t.Fatalf("retry -all with no letters: exit %d, want 0", code)
	}
}
