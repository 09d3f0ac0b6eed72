package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRedisConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  redisConfig
		// want describes the options: kind, addresses, user, password, db, TLS server name.
		kind, user, password, tlsName string
		addrs                         []string
		db                            int
	}{
		{name: "address", cfg: redisConfig{target: "localhost:6379"}, kind: "single", addrs: []string{"localhost:6379"}},
		{name: "addresses are a cluster", cfg: redisConfig{target: "a:1, b:2"}, kind: "cluster", addrs: []string{"a:1", "b:2"}},
		{name: "url", cfg: redisConfig{target: "redis://app:s3cret@h:6380/2"}, kind: "single", addrs: []string{"h:6380"}, user: "app", password: "s3cret", db: 2},
		{name: "tls url", cfg: redisConfig{target: "rediss://cache.example.com:6380"}, kind: "single", addrs: []string{"cache.example.com:6380"}, tlsName: "cache.example.com"},
		{name: "password from the environment wins", cfg: redisConfig{target: "redis://app:old@h:1", password: "new"}, kind: "single", addrs: []string{"h:1"}, user: "app", password: "new"},
		{name: "cluster url", cfg: redisConfig{target: "redis://:pw@h1:1?addr=h2:2&addr=h3:3"}, kind: "cluster", addrs: []string{"h1:1", "h2:2", "h3:3"}, password: "pw"},
		{name: "sentinel url", cfg: redisConfig{target: "redis://:pw@s1:26379?master_name=main&addr=s2:26379"}, kind: "sentinel", addrs: []string{"s1:26379", "s2:26379"}, password: "pw"},
		{name: "sentinel flag", cfg: redisConfig{target: "s1:26379,s2:26379", sentinelMaster: "main", password: "pw"}, kind: "sentinel", addrs: []string{"s1:26379", "s2:26379"}, password: "pw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			single, cluster, sentinel, err := tc.cfg.options()
			if err != nil {
				t.Fatal(err)
			}
			var kind, user, password, tlsName string
			var addrs []string
			var db int
			switch {
			case single != nil:
				kind, addrs, user, password, db = "single", []string{single.Addr}, single.Username, single.Password, single.DB
				if !single.ContextTimeoutEnabled {
					t.Error("ContextTimeoutEnabled is off")
				}
				if single.TLSConfig != nil {
					tlsName = single.TLSConfig.ServerName
				}
			case cluster != nil:
				kind, addrs, user, password = "cluster", cluster.Addrs, cluster.Username, cluster.Password
				if !cluster.ContextTimeoutEnabled {
					t.Error("ContextTimeoutEnabled is off")
				}
			case sentinel != nil:
				kind, addrs, user, password, db = "sentinel", sentinel.SentinelAddrs, sentinel.Username, sentinel.Password, sentinel.DB
				if sentinel.MasterName != "main" || sentinel.SentinelPassword != "" || !sentinel.ContextTimeoutEnabled {
					t.Errorf("sentinel options %+v", sentinel)
				}
			}
			if kind != tc.kind || !slices.Equal(addrs, tc.addrs) || user != tc.user || password != tc.password || db != tc.db || tlsName != tc.tlsName {
				t.Errorf("got %s %q user %q password %q db %d tls %q; want %s %q user %q password %q db %d tls %q",
					kind, addrs, user, password, db, tlsName, tc.kind, tc.addrs, tc.user, tc.password, tc.db, tc.tlsName)
			}
		})
	}
}

func TestRedisConfigRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  redisConfig
		want string
	}{
		{redisConfig{}, "-redis (or $PGCACHE_REDIS_ADDR) is required"},
		{redisConfig{target: "http://h:1"}, `scheme "http"`},
		{redisConfig{target: "h:1", caFile: "ca.pem"}, "need TLS: write the address as rediss://"},
		{redisConfig{target: "rediss://h:1", certFile: "c.pem"}, "give both, or neither"},
		{redisConfig{target: "rediss://h:1", caFile: "/no/such/ca.pem"}, "-redis-ca-file"},
		{redisConfig{target: "redis://u:topsecret@h:1?master_name="}, "-redis-sentinel-master is empty"},
		{redisConfig{target: "redis://u:topsecret@h:1/x"}, "invalid database number"},
	} {
		_, _, _, err := tc.cfg.options()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one saying %q", tc.cfg, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "topsecret") {
			t.Errorf("%+v: the error shows the password: %v", tc.cfg, err)
		}
	}
	if got := (redisConfig{target: "rediss://u:topsecret@h:1"}).display(); strings.Contains(got, "topsecret") {
		t.Errorf("display shows the password: %s", got)
	}
}

func TestSecretFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "password")
	if err := os.WriteFile(file, []byte("from-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PGCACHE_POSTGRES_URL": "postgres://x", "PGCACHE_TABLES": "widgets",
		"PGCACHE_REDIS_URL": "redis://h:1", "PGCACHE_REDIS_PASSWORD_FILE": file,
	}
	c, err := parse(nil, func(k string) string { return env[k] }, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if c.redis.password != "from-a-file" || c.redis.target != "redis://h:1" {
		t.Errorf("password %q, target %q", c.redis.password, c.redis.target)
	}
	env["PGCACHE_REDIS_PASSWORD"] = "also-set"
	if _, err := parse(nil, func(k string) string { return env[k] }, os.Stderr); err == nil || !strings.Contains(err.Error(), "both set") {
		t.Errorf("both NAME and NAME_FILE: error %v", err)
	}
	delete(env, "PGCACHE_REDIS_PASSWORD")
	env["PGCACHE_REDIS_PASSWORD_FILE"] = filepath.Join(dir, "missing")
	if _, err := parse(nil, func(k string) string { return env[k] }, os.Stderr); err == nil || !strings.Contains(err.Error(), "PGCACHE_REDIS_PASSWORD_FILE") {
		t.Errorf("missing file: error %v", err)
	}
}
