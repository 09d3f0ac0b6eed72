package audit

import (
	"math"
	"testing"
	"time"
)

func TestEqualValue(t *testing.T) {
	at := time.Date(2026, 12, 2, 13, 0, 0, 123456789, time.UTC)
	for _, tc := range []struct {
		name       string
		cached, pg any
		want       bool
	}{
		{"ints", int64(42), int64(42), true},
		{"ints differ", int64(42), int64(43), false},
		{"text", "new", "new", true},
		{"text differs", "old", "new", false},
		{"NULL as a zero string", "", nil, true},
		{"NULL as a zero int", int64(0), nil, true},
		{"NULL but cached a value", "x", nil, false},
		{"cached NULL, Postgres a value", nil, "x", false},
		{"times at microseconds", at, at.Truncate(time.Microsecond).In(time.FixedZone("X", 3600)), true},
		{"times differ", at, at.Add(time.Second), false},
		{"time in a string field", at.Format(time.RFC3339Nano), at, true},
		{"numeric in a float field", 1.5, "1.50", true},
		{"numeric in a float field differs", 1.5, "1.51", false},
		{"numeric in an int field", int64(3), "3", true},
		{"decimal printed at another scale", "1.5", "1.50", true},
		{"not decimals", "1.5x", "1.50x", false},
		{"real column", float64(float32(0.1)), float64(float32(0.1)), true},
		{"real against double", 0.1, float64(float32(0.1)), true},
		{"floats differ", 0.1, 0.2, false},
		{"NaN", math.NaN(), math.NaN(), true},
		{"bytes and text", []byte("abc"), "abc", true},
		{"bytes differ", []byte("abc"), []byte("abd"), false},
		{"bool", true, true, true},
		{"bool differs", true, false, false},
		{"bool as text", false, "f", true},
	} {
		if got := equalValue(tc.cached, tc.pg); got != tc.want {
			t.Errorf("%s: equalValue(%#v, %#v) = %v, want %v", tc.name, tc.cached, tc.pg, got, tc.want)
		}
	}
}
