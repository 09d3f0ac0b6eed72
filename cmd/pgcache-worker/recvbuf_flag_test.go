package main

import (
	"io"
	"strings"
	"testing"
)

// TestReceiveBufferFlag: -receive-buffer (or its variable) reaches the stream's
// options: 0 (the kernel's sizing) by default, else the number of bytes given; anything
// else is refused with an error naming the flag.
func TestReceiveBufferFlag(t *testing.T) {
	t.Parallel()
	base := []string{"-postgres", "postgres://h/db", "-redis", "h:6379"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want int
	}{
		{nil, nil, 0},
		{[]string{"-receive-buffer", "65536"}, nil, 65536},
		{nil, map[string]string{"PGCACHE_RECEIVE_BUFFER": "32768"}, 32768},
	} {
		cfg, err := parse(append(base, tc.args...), func(k string) string { return tc.env[k] }, io.Discard)
		if err != nil {
			t.Fatalf("%q %v: %v", tc.args, tc.env, err)
		}
		if got := workerOptions(cfg, []string{"t"}, nil, nil).Stream.ReceiveBuffer; got != tc.want {
			t.Errorf("%q %v: ReceiveBuffer %d, want %d", tc.args, tc.env, got, tc.want)
		}
	}
	for _, bad := range []string{"big", "-5", "64KiB"} {
		_, err := parse(append(base, "-receive-buffer", bad), noEnv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "-receive-buffer") || !strings.Contains(err.Error(), bad) {
			t.Errorf("-receive-buffer %q: error %v, want one naming the flag and the value", bad, err)
		}
	}
}
