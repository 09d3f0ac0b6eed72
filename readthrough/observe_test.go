package readthrough_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/pgcache/pgcache/readthrough"
)

// recorder is an Observer noting what it is told, named so that two can be told apart.
type recorder struct {
	name string
	log  *[]string
}

type ctxKey struct{}

func (r recorder) ObserveRead(_ context.Context, model string, outcome readthrough.Outcome, _ time.Duration) {
	*r.log = append(*r.log, r.name+" read "+model+" "+outcome.String())
}

func (r recorder) StartOp(ctx context.Context, op readthrough.Op, model string) (context.Context, func(readthrough.Outcome, error)) {
	*r.log = append(*r.log, r.name+" start "+op.String()+" "+model)
	parent, _ := ctx.Value(ctxKey{}).(string)
	return context.WithValue(ctx, ctxKey{}, r.name), func(o readthrough.Outcome, err error) {
		*r.log = append(*r.log, r.name+" end "+o.String()+" after "+parent+" err="+errString(err))
	}
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func TestObservers(t *testing.T) {
	if readthrough.Observers() != nil || readthrough.Observers(nil, nil) != nil {
		t.Error("Observers of none is not nil: observing would stay on")
	}
	var log []string
	a, b := recorder{"a", &log}, recorder{"b", &log}
	if got := readthrough.Observers(nil, a); got != readthrough.Observer(a) {
		t.Errorf("Observers of one = %v, want it alone", got)
	}
	obs := readthrough.Observers(a, nil, b)
	obs.ObserveRead(context.Background(), "Widget", readthrough.OutcomeNearHit, time.Millisecond)
	ctx, end := obs.StartOp(context.Background(), readthrough.OpSave, "Widget")
	if got := ctx.Value(ctxKey{}); got != "b" {
		t.Errorf("the op's context is %v's, want the last observer's (b), which saw a's", got)
	}
	end(readthrough.OutcomeError, errors.New("boom"))
	want := []string{
		"a read Widget near_hit", "b read Widget near_hit",
		"a start save Widget", "b start save Widget",
		"b end error after a err=boom", "a end error after  err=boom",
	}
	if !slices.Equal(log, want) {
		t.Errorf("told\n%q\nwant\n%q", log, want)
	}
}

func TestOutcomeAndOpNames(t *testing.T) {
	for o, want := range map[readthrough.Outcome]string{
		readthrough.OutcomeHit: "hit", readthrough.OutcomeNegativeHit: "negative_hit", readthrough.OutcomeNearHit: "near_hit",
		readthrough.OutcomeMiss: "miss", readthrough.OutcomeError: "error", readthrough.OutcomeFound: "found",
		readthrough.OutcomeNotFound: "not_found", readthrough.OutcomeStored: "stored", readthrough.OutcomeRefused: "refused",
		readthrough.OutcomeUncached: "uncached", readthrough.OutcomeOK: "ok", 0: "unknown", 200: "unknown",
	} {
		if got := o.String(); got != want {
			t.Errorf("Outcome(%d).String() = %q, want %q", o, got, want)
		}
	}
	for op, want := range map[readthrough.Op]string{
		readthrough.OpMiss: "miss", readthrough.OpFill: "fill", readthrough.OpCreate: "create",
		readthrough.OpSave: "save", readthrough.OpDelete: "delete", 0: "unknown", 9: "unknown",
	} {
		if got := op.String(); got != want {
			t.Errorf("Op(%d).String() = %q, want %q", op, got, want)
		}
		if w := op >= readthrough.OpCreate && op <= readthrough.OpDelete; op.Write() != w {
			t.Errorf("Op(%s).Write() = %v", op, !w)
		}
	}
}
