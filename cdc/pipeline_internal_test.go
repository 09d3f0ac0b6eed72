package cdc

import (
	"context"
	"testing"
	"time"
)

func txOf(changes int, end LSN) *Tx {
	return &Tx{EndLSN: end, Changes: make([]Change, changes)}
}

func TestPipelineBounds(t *testing.T) {
	p := newPipeline(0)
	for i := range maxQueuedTxs {
		if !p.put(txOf(1, LSN(i+1))) {
			t.Fatalf("put %d refused, want room for %d transactions", i, maxQueuedTxs)
		}
	}
	if p.put(txOf(1, maxQueuedTxs+1)) {
		t.Fatalf("put accepted transaction %d, want at most %d queued", maxQueuedTxs+1, maxQueuedTxs)
	}
	txs, err := p.take(context.Background())
	if err != nil || len(txs) != maxQueuedTxs || txs[0].EndLSN != 1 || txs[len(txs)-1].EndLSN != maxQueuedTxs {
		t.Fatalf("take returned %d transactions (%v), want all %d in order", len(txs), err, maxQueuedTxs)
	}
	select {
	case <-p.room:
	default:
		t.Fatal("take left no token in room")
	}
	// Taken is not handled: still pending, but the queue has room again.
	if got := p.pendingCount(); got != maxQueuedTxs {
		t.Fatalf("pending %d, want %d", got, maxQueuedTxs)
	}

	// One transaction of any size goes into an empty queue; nothing after it while it
	// holds more than the bound on changes.
	if !p.put(txOf(maxQueuedChanges+10, 5000)) {
		t.Fatal("a large transaction was refused by an empty queue")
	}
	if p.put(txOf(1, 5001)) {
		t.Fatal("put accepted a transaction beyond the bound on changes")
	}
	if _, err := p.take(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !p.put(txOf(maxQueuedChanges-1, 5001)) || !p.put(txOf(1, 5002)) || p.put(txOf(1, 5003)) {
		t.Fatalf("the bound on changes is not %d", maxQueuedChanges)
	}
}

func TestPipelineConfirms(t *testing.T) {
	p := newPipeline(100)
	if got := p.idle(200); got != 200 {
		t.Fatalf("idle with nothing pending confirmed %s, want 0/C8", got)
	}
	if got := p.idle(150); got != 200 {
		t.Fatalf("idle moved the position back to %s", got)
	}
	p.put(txOf(1, 300))
	p.put(txOf(1, 400))
	if got := p.idle(500); got != 200 {
		t.Fatalf("idle with two transactions pending confirmed %s, want 0/C8", got)
	}
	txs, _ := p.take(context.Background())
	if got := p.idle(500); got != 200 {
		t.Fatalf("idle with two transactions being handled confirmed %s, want 0/C8", got)
	}
	if got := p.handled(1, txs[0].EndLSN); got != 300 {
		t.Fatalf("handled confirmed %s, want 0/12C", got)
	}
	if got := p.idle(500); got != 300 {
		t.Fatalf("idle with one transaction being handled confirmed %s, want 0/12C", got)
	}
	if got := p.handled(1, txs[1].EndLSN); got != 400 {
		t.Fatalf("handled confirmed %s, want 0/190", got)
	}
	if got := p.idle(500); got != 500 || p.position() != 500 {
		t.Fatalf("idle with nothing pending confirmed %s, want 0/1F4", got)
	}
}

func TestPipelineTakeWaits(t *testing.T) {
	p := newPipeline(0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.take(ctx); err != context.Canceled {
		t.Fatalf("take on a done context returned %v", err)
	}
	got := make(chan []*Tx)
	go func() {
		txs, _ := p.take(context.Background())
		got <- txs
	}()
	p.put(txOf(1, 1))
	select {
	case txs := <-got:
		if len(txs) != 1 {
			t.Fatalf("take returned %d transactions, want 1", len(txs))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("take did not return after put")
	}
}

// TestPipelineBehind: the stream is behind while it decodes what committed more than
// backlogSlack bytes of WAL before the server's WAL end, the greatest reported.
func TestPipelineBehind(t *testing.T) {
	p := newPipeline(0)
	if p.behind(1) {
		t.Fatal("behind before any WAL end was reported")
	}
	p.sawServerEnd(3 * backlogSlack)
	p.sawServerEnd(backlogSlack) // an older report does not move it back
	for _, c := range []struct {
		pos  LSN
		want bool
	}{{0, false}, {1, true}, {2*backlogSlack - 1, true}, {2 * backlogSlack, false}, {3 * backlogSlack, false}} {
		if got := p.behind(c.pos); got != c.want {
			t.Errorf("behind(%d) = %v with WAL end %d, want %v", c.pos, got, 3*backlogSlack, c.want)
		}
	}
}

// TestTakeGathersWhileBehind: while the stream is behind, take goes on taking what is
// queued until it holds gatherChanges changes (or gatherWait passes, here an hour);
// once it keeps up, take returns what is queued at once.
func TestTakeGathersWhileBehind(t *testing.T) {
	p := newPipeline(0)
	p.gatherWait = time.Hour
	p.sawServerEnd(100 * backlogSlack)
	p.put(txOf(1, 1))
	got := make(chan []*Tx, 1)
	go func() {
		txs, err := p.take(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- txs
	}()
	// Once take has the first transaction, queue the rest of a batch.
	for {
		p.mu.Lock()
		taken := len(p.queue) == 0
		p.mu.Unlock()
		if taken {
			break
		}
		time.Sleep(time.Millisecond)
	}
	p.put(txOf(gatherChanges-2, 2))
	p.put(txOf(1, 3))
	txs := <-got
	if len(txs) != 3 || txs[0].EndLSN != 1 || txs[1].EndLSN != 2 || txs[2].EndLSN != 3 {
		t.Fatalf("take returned %d transactions, want the 3 queued, in order", len(txs))
	}

	p.put(txOf(1, 100*backlogSlack)) // caught up
	txs, err := p.take(context.Background())
	if err != nil || len(txs) != 1 {
		t.Fatalf("take = %d transactions, %v; want the one queued, at once", len(txs), err)
	}
}

// TestPutWakesGatheringTake: while take gathers a backlog, put wakes it only once what
// it holds and the queue reach gatherChanges, or for a transaction that is not behind;
// otherwise, for every transaction.
func TestPutWakesGatheringTake(t *testing.T) {
	p := newPipeline(0)
	p.sawServerEnd(100 * backlogSlack)
	woken := func() bool {
		select {
		case <-p.ready:
			return true
		default:
			return false
		}
	}
	p.put(txOf(1, 1))
	if !woken() {
		t.Fatal("a put did not wake a take that is not gathering")
	}
	p.takeQueued(nil, 0)
	p.gather(1)
	p.put(txOf(10, 2))
	if woken() {
		t.Fatal("a put of a small transaction behind woke a gathering take")
	}
	p.put(txOf(gatherChanges-11, 3))
	if !woken() {
		t.Fatal("a put that brought the gathered changes to gatherChanges did not wake take")
	}
	p.takeQueued(nil, 0)
	p.put(txOf(1, 100*backlogSlack)) // caught up
	if !woken() {
		t.Fatal("a put of a transaction that is not behind did not wake a gathering take")
	}
	p.takeQueued(nil, 0)
	p.gather(-1)
	p.put(txOf(1, 4))
	if !woken() {
		t.Fatal("a put did not wake take once it stopped gathering")
	}
}

// TestPipelineReportDue: after reportPast, reportDue holds once the position reaches
// the LSN, by a handled transaction or an idle keepalive, and only once; before
// reportPast, never.
func TestPipelineReportDue(t *testing.T) {
	p := newPipeline(100)
	if p.reportDue() {
		t.Fatal("reportDue with nothing asked")
	}
	p.reportPast(200)
	if !p.put(txOf(1, 150)) {
		t.Fatal("put refused")
	}
	if _, err := p.take(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.handled(1, 150)
	if p.reportDue() {
		t.Fatal("reportDue at 150, before 200")
	}
	p.idle(250)
	if !p.reportDue() {
		t.Fatal("no reportDue once an idle keepalive confirmed 250, past 200")
	}
	if p.reportDue() {
		t.Fatal("reportDue twice for one record")
	}
}
