package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/internal/store"
	"github.com/pgcache/pgcache/keys"
	"github.com/pgcache/pgcache/writeback"
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

// deadletter runs "pgcache-worker deadletter list|retry|drop": see the package doc.
func deadletter(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	const usage = "usage: pgcache-worker deadletter list|retry|drop [flags] [-json] [-all | ID...]"
	if len(args) == 0 || !slices.Contains([]string{"list", "retry", "drop"}, args[0]) {
		fmt.Fprintln(stderr, usage)
		return exitConfig
	}
	verb := args[0]
	var asJSON, all bool
	var rest []string
	for _, a := range args[1:] {
		switch strings.TrimLeft(a, "-") {
		case "json":
			asJSON = true
		case "all":
			all = true
		default:
			rest = append(rest, a)
		}
	}
	cfg, err := parse(rest, getenv, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "pgcache-worker deadletter:", err)
		return exitConfig
	}
	ids := cfg.args
	switch {
	case verb == "list" && (all || len(ids) > 0):
		err = errors.New("list takes no ids and no -all")
	case verb != "list" && all == (len(ids) > 0):
		err = fmt.Errorf("%s needs the ids of the letters (after the flags), or -all", verb)
	case verb != "list" && asJSON:
		err = errors.New("-json goes with list")
	}
	if err != nil {
		fmt.Fprintf(stderr, "pgcache-worker deadletter: %v\n%s\n", err, usage)
		return exitConfig
	}
	rdb, err := cfg.redis.client()
	if err != nil {
		fmt.Fprintln(stderr, "pgcache-worker deadletter:", err)
		return exitConfig
	}
	defer rdb.Close()
	// Postgres is reached only to apply a write (retry).
	db, err := gorm.Open(postgres.Open(cfg.postgres), &gorm.Config{Logger: logger.Discard, DisableAutomaticPing: true})
	if err != nil {
		fmt.Fprintln(stderr, "pgcache-worker deadletter: -postgres:", err)
		return exitConfig
	}
	if sqlDB, err := db.DB(); err == nil {
		defer sqlDB.Close()
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	f, err := writeback.NewFlusher(db, rdb, writeback.FlusherOptions{Prefix: cfg.prefix, Consumer: "deadletter-command", Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "pgcache-worker deadletter:", err)
		return exitConfig
	}
	if verb == "list" || all {
		letters, err := f.DeadLetters(ctx, maxDeadLetters)
		if err != nil {
			fmt.Fprintf(stderr, "pgcache-worker deadletter: redis %s: %v\n", cfg.redis.display(), err)
			return exitNoRedis
		}
		if verb == "list" {
			return printLetters(stdout, stderr, letters, asJSON)
		}
		for _, d := range letters {
			ids = append(ids, d.ID)
		}
	}
	code := exitOK
	switch verb {
	case "drop":
		for _, id := range ids {
			n, err := f.DropDeadLetters(ctx, id)
			switch {
			case err != nil:
				fmt.Fprintf(stderr, "pgcache-worker deadletter: redis %s: %v\n", cfg.redis.display(), err)
				return exitNoRedis
			case n == 0:
				fmt.Fprintf(stderr, "%s: no such dead letter\n", id)
				code = exitAttention
			default:
				fmt.Fprintf(stdout, "dropped %s\n", id)
			}
		}
	case "retry":
		for _, id := range ids {
			if err := f.RetryDeadLetter(ctx, id); err != nil {
				fmt.Fprintf(stderr, "%s: not retried: %v\n", id, err)
				code = exitAttention
				continue
			}
			fmt.Fprintf(stdout, "retried %s: applied to Postgres and removed\n", id)
		}
	}
	return code
}

// maxDeadLetters bounds what list and -all read at once.
const maxDeadLetters = 100000

// letterJSON is a dead letter as list -json prints it.
type letterJSON struct {
	ID       string    `json:"id"`
	Table    string    `json:"table"`
	Key      string    `json:"key"`
	Version  string    `json:"version"`
	Error    string    `json:"error"`
	Attempts int       `json:"attempts"`
	Consumer string    `json:"consumer"`
	FailedAt time.Time `json:"failed_at"`
	Change   string    `json:"change"`
	Base     string    `json:"base,omitempty"`
}

func printLetters(stdout, stderr io.Writer, letters []writeback.DeadLetter, asJSON bool) int {
	if asJSON {
		out := make([]letterJSON, len(letters))
		for i, d := range letters {
			out[i] = letterJSON{ID: d.ID, Table: d.Table, Key: d.Key, Version: d.Version, Error: d.Reason, Attempts: d.Attempts,
				Consumer: d.Consumer, FailedAt: d.FailedAt, Change: d.Change, Base: d.Base}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintln(stderr, "pgcache-worker deadletter:", err)
			return exitFailure
		}
		return exitOK
	}
	if len(letters) == 0 {
		fmt.Fprintln(stdout, "no dead letters")
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTABLE\tKEY\tFAILED AT\tATTEMPTS\tERROR")
	for _, d := range letters {
		reason := strings.Join(strings.Fields(d.Reason), " ")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", d.ID, d.Table, d.Key, d.FailedAt.Format(time.RFC3339), d.Attempts, reason)
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintln(stderr, "pgcache-worker deadletter:", err)
		return exitFailure
	}
	return exitOK
}
