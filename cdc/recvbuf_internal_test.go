package cdc

import (
	"testing"
	"time"
)

func TestReceiveBufferRule(t *testing.T) {
	for _, c := range []struct {
		opt     int
		connect time.Duration
		want    int
	}{
		{0, 100 * time.Microsecond, nearReceiveBuffer}, // beside Postgres
		{0, 5 * time.Millisecond, 0},                   // farther: the kernel's sizing
		{0, nearConnect, 0},
		{1 << 20, 5 * time.Millisecond, 1 << 20}, // set, whatever the distance
		{8 << 10, 0, 8 << 10},
		{-1, 0, 0}, // never
	} {
		if got := receiveBuffer(c.opt, c.connect); got != c.want {
			t.Errorf("receiveBuffer(%d, %v) = %d, want %d", c.opt, c.connect, got, c.want)
		}
	}
}
