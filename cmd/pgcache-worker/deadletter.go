package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
)

// deadLetterGauge exports the length of the prefix's dead-letter stream, whoever
// (this worker's flusher or an application's) moved the writes there.
func deadLetterGauge(rdb redis.UniversalClient, prefix string) prometheus.Collector {
	st := store.New(rdb, time.Second, "metrics")
	stream := keys.Prefix(prefix).DeadLetter()
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "pgcache", Subsystem: "writeback", Name: "dead_letters",
		Help: "Write-back writes in the dead-letter stream, given up on (-1 when Redis does not answer): see pgcache-worker deadletter."},
		func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			n, err := st.JournalLen(ctx, stream)
			if err != nil {
				return -1
			}
			return float64(n)
		})
}
