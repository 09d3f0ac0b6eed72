package store

import (
	"bytes"
	"reflect"
	"testing"
)

// TestDepsHeader: a stored response's dependency header splits back into the
// dependencies and the payload it was made of; every truncation of the header and
// every other first byte is refused.
func TestDepsHeader(t *testing.T) {
	deps := []Dep{{Key: "p:{a|1|7}:d", Epoch: "tok:1"}, {Key: "", Epoch: "x\ny"}, {Key: "12:34", Epoch: ""}}
	payload := []byte("\x02payload:with\ncolons")
	b := append(appendDeps(nil, deps), payload...)
	gotDeps, gotPayload, err := splitDeps(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotDeps, deps) || !bytes.Equal(gotPayload, payload) {
		t.Fatalf("split %q, %q; want %q, %q", gotDeps, gotPayload, deps, payload)
	}
	header := len(appendDeps(nil, deps))
	for i := range header {
		if _, _, err := splitDeps(b[:i]); err == nil {
			t.Errorf("header truncated to %d bytes: split", i)
		}
	}
	if _, _, err := splitDeps(append([]byte{1}, b[1:]...)); err == nil {
		t.Error("a value without the mark: split")
	}
	if d, p, err := splitDeps(appendDeps(nil, nil)); err != nil || len(d) != 0 || len(p) != 0 {
		t.Errorf("no dependencies: %v, %q, %v", d, p, err)
	}
}
