package near_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/readthrough"
)

// aclRules returns the rules of docs/redis-acl.conf's user line and of its near-cache
// line, with PREFIX and PASSWORD filled in.
func aclRules(t *testing.T, prefix, password string) (user, near []any) {
	t.Helper()
	b, err := os.ReadFile("../../docs/redis-acl.conf")
	if err != nil {
		t.Fatal(err)
	}
	fill := func(fields []string) []any {
		var out []any
		for _, f := range fields {
			out = append(out, strings.ReplaceAll(strings.ReplaceAll(f, "PREFIX", prefix), "PASSWORD", password))
		}
		return out
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) > 2 && fields[0] == "user":
			user = fill(fields[2:])
		case len(fields) > 1 && fields[0] == "#near":
			near = fill(fields[1:])
		}
	}
	if user == nil || near == nil {
		t.Fatal("docs/redis-acl.conf lacks its user line or its #near line")
	}
	return user, near
}

// TestNearRedisACL: a process with the near cache on, as a Redis user with the
// documented least ACL and its near-cache additions, serves near hits and drops a row
// whose entry another client deleted. The control, without the additions, never has tracking up:
// its reads are correct but none is a near hit.
func TestNearRedisACL(t *testing.T) {
	t.Parallel()
	for _, withNear := range []bool{true, false} {
		t.Run(map[bool]string{true: "documented", false: "control-without-near-line"}[withNear], func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, nil)
			ctx := context.Background()
			user := "near_" + e.prefix
			rule, near := aclRules(t, e.prefix, "s3cret")
			if withNear {
				rule = append(rule, near...)
			}
			if err := e.rdb.Do(ctx, append([]any{"ACL", "SETUSER", user, "reset"}, rule...)...).Err(); err != nil {
				t.Fatalf("ACL SETUSER: %v", err)
			}
			t.Cleanup(func() { e.rdb.Do(context.Background(), "ACL", "DELUSER", user) })
			rdb := redis.NewClient(&redis.Options{Addr: e.rd.Addr(), Username: user, Password: "s3cret", ContextTimeoutEnabled: true})
			t.Cleanup(func() { rdb.Close() })
			c, err := readthrough.New(e.open(t), rdb, readthrough.Options{Prefix: e.prefix, RedisTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			a := register[Widget](t, c, nearOn)
			if !withNear {
				for range 20 {
					if got := name(t, a, 1); got != "v0" {
						t.Fatalf("control: read %q, want v0", got)
					}
					time.Sleep(50 * time.Millisecond)
				}
				if s := a.Stats(); s.NearHits != 0 {
					t.Fatalf("control: %d near hits without the tracking commands: the test cannot tell the near line is needed", s.NearHits)
				}
				return
			}
			inNear(t, a, 1)
			e.exec(t, `UPDATE widgets SET name = 'v1' WHERE id = 1`)
			key, _ := a.Key(int64(1))
			if err := e.rdb.Del(ctx, key).Err(); err != nil { // as the worker does
				t.Fatal(err)
			}
			dropped(t, a, 1)
			if got := name(t, a, 1); got != "v1" {
				t.Fatalf("read %q after the row changed, want v1", got)
			}
			if s := a.Stats(); s.Errors != 0 {
				t.Fatalf("%d Redis errors as the documented user: the ACL lacks a command", s.Errors)
			}
		})
	}
}
