package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

// TestStandbySnapshotFlag: -standby-snapshot-interval (or its variable) reaches the
// stream's options, 1s by default and 0 meaning off (a negative interval); a bad value
// is refused with an error naming the flag.
func TestStandbySnapshotFlag(t *testing.T) {
	t.Parallel()
	base := []string{"-postgres", "postgres://h/db", "-redis", "h:6379"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want time.Duration
	}{
		{nil, nil, time.Second},
		{[]string{"-standby-snapshot-interval", "250ms"}, nil, 250 * time.Millisecond},
		{[]string{"-standby-snapshot-interval", "0"}, nil, -1},
		{nil, map[string]string{"PGCACHE_STANDBY_SNAPSHOT_INTERVAL": "5s"}, 5 * time.Second},
	} {
		cfg, err := parse(append(base, tc.args...), func(k string) string { return tc.env[k] }, io.Discard)
		if err != nil {
			t.Fatalf("%q %v: %v", tc.args, tc.env, err)
		}
		if got := workerOptions(cfg, []string{"t"}, nil, nil).Stream.StandbySnapshotInterval; got != tc.want {
			t.Errorf("%q %v: StandbySnapshotInterval %v, want %v", tc.args, tc.env, got, tc.want)
		}
	}
	for _, bad := range []string{"soon", "-1s"} {
		_, err := parse(append(base, "-standby-snapshot-interval", bad), noEnv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "-standby-snapshot-interval") || !strings.Contains(err.Error(), bad) {
			t.Errorf("-standby-snapshot-interval %q: error %v, want one naming the flag and the value", bad, err)
		}
	}
}
