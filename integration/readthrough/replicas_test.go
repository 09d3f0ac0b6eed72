package readthrough_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/httpcache"
	"github.com/pgcache/pgcache/readthrough"
)

// TestReplicaReadsRefused: a Cluster client that reads from replicas (ReadOnly, or
// routing by latency or at random, which imply it) would serve a row after its
// invalidation for as long as the replica lags: New refuses it and names the option;
// the same client reading from masters is accepted. (Nothing is dialled.)
func TestReplicaReadsRefused(t *testing.T) {
	t.Parallel()
	db := modelDB(t)
	for name, opts := range map[string]redis.ClusterOptions{
		"ReadOnly":       {ReadOnly: true},
		"RouteByLatency": {RouteByLatency: true},
		"RouteRandomly":  {RouteRandomly: true},
		"":               {},
	} {
		opts.Addrs = []string{"127.0.0.1:1"}
		rdb := redis.NewClusterClient(&opts)
		t.Cleanup(func() { rdb.Close() })
		_, rtErr := readthrough.New(db, rdb, readthrough.Options{})
		_, httpErr := httpcache.New(rdb, httpcache.Options{})
		if name == "" {
			if rtErr != nil || httpErr != nil {
				t.Errorf("a Cluster client reading from masters: readthrough.New: %v; httpcache.New: %v", rtErr, httpErr)
			}
			continue
		}
		if !errors.Is(rtErr, readthrough.ErrConfig) || !strings.Contains(rtErr.Error(), name) {
			t.Errorf("readthrough.New with %s: %v; want ErrConfig naming %s", name, rtErr, name)
		}
		if !errors.Is(httpErr, httpcache.ErrConfig) || !strings.Contains(httpErr.Error(), name) {
			t.Errorf("httpcache.New with %s: %v; want ErrConfig naming %s", name, httpErr, name)
		}
	}
}
