package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/pgcache/pgcache/cdc"
)

// flagCase is one way of giving a stream flag (arguments, environment) and the value
// it must reach the stream's options as.
type flagCase[T comparable] struct {
	args []string
	env  map[string]string
	want T
}

// checkStreamFlag parses each case and reads the stream's options with got; each bad
// value of flag must be refused with an error naming the flag and the value.
func checkStreamFlag[T comparable](t *testing.T, flag string, got func(cdc.Options) T, cases []flagCase[T], bad []string) {
	t.Helper()
	base := []string{"-postgres", "postgres://h/db", "-redis", "h:6379"}
	for _, tc := range cases {
		cfg, err := parse(append(base, tc.args...), func(k string) string { return tc.env[k] }, io.Discard)
		if err != nil {
			t.Fatalf("%q %v: %v", tc.args, tc.env, err)
		}
		if v := got(workerOptions(cfg, []string{"t"}, nil, nil).Stream); v != tc.want {
			t.Errorf("%q %v: %v, want %v", tc.args, tc.env, v, tc.want)
		}
	}
	for _, b := range bad {
		_, err := parse(append(base, flag, b), noEnv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), flag) || !strings.Contains(err.Error(), b) {
			t.Errorf("%s %q: error %v, want one naming the flag and the value", flag, b, err)
		}
	}
}

// TestStandbySnapshotFlag: -standby-snapshot-interval (or its variable) reaches the
// stream's options, 1s by default and 0 meaning off (a negative interval); a bad value
// is refused with an error naming the flag.
func TestStandbySnapshotFlag(t *testing.T) {
	t.Parallel()
	checkStreamFlag(t, "-standby-snapshot-interval", func(o cdc.Options) time.Duration { return o.StandbySnapshotInterval },
		[]flagCase[time.Duration]{
			{nil, nil, time.Second},
			{[]string{"-standby-snapshot-interval", "250ms"}, nil, 250 * time.Millisecond},
			{[]string{"-standby-snapshot-interval", "0"}, nil, -1},
			{nil, map[string]string{"PGCACHE_STANDBY_SNAPSHOT_INTERVAL": "5s"}, 5 * time.Second},
		}, []string{"soon", "-1s"})
}

// TestReceiveBufferFlag: -receive-buffer (or its variable) reaches the stream's
// options: 0 (the kernel's sizing) by default, else the number of bytes given; anything
// else is refused with an error naming the flag.
func TestReceiveBufferFlag(t *testing.T) {
	t.Parallel()
	checkStreamFlag(t, "-receive-buffer", func(o cdc.Options) int { return o.ReceiveBuffer },
		[]flagCase[int]{
			{nil, nil, 0},
			{[]string{"-receive-buffer", "65536"}, nil, 65536},
			{nil, map[string]string{"PGCACHE_RECEIVE_BUFFER": "32768"}, 32768},
		}, []string{"big", "-5", "64KiB"})
}
