package cdc

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Options configure a [Stream]. Slot, Publication and Tables are required; zero values of
// the other fields mean their defaults. NewStream copies the Options.
type Options struct {
	// Slot is the name of the logical replication slot. Required: 1 to 63 characters of
	// a-z, 0-9 and _. The slot is created (persistent, pgoutput) when missing and kept
	// when the stream stops; dropping it is the operator's decision.
	Slot string
	// Publication is the name of the publication to stream. Required: a plain lower-case
	// identifier ([a-z_][a-z0-9_]*, at most 63 characters). It is created FOR TABLE
	// Tables when missing, and missing tables are added to it; it is never FOR ALL
	// TABLES.
	Publication string
	// Tables are the tables to publish, at least one: "table" (found through the
	// role's search_path) or "schema.table", split at the first dot. Names are exact:
	// they are quoted, never folded to lower case, so "Sales.Order Items" is the
	// table "Order Items" in the schema "Sales". Gap reports tables in this spelling.
	Tables []string
	// StatusInterval is how often the confirmed position is reported to the server.
	// Default 10s. It must stay well under the server's wal_sender_timeout (60s by
	// default).
	StatusInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait before reconnecting after an error:
	// it starts at MinBackoff, doubles on each consecutive failure up to MaxBackoff,
	// is jittered, and starts over once a connection has streamed for MaxBackoff.
	// Defaults 100ms and 10s. While the slot is in use by another process
	// ([ErrSlotInUse]) the wait is capped at 1s (or MinBackoff, if longer), so that a
	// standby takes over within about a second of the active stream's end.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// PartitionCheckInterval is how often the partitions of partitioned tables are
	// read while streaming: attaching, detaching or dropping one changes the table's
	// rows with no row change in the stream, so the stream stops, reads the catalog
	// again and reports a Gap for the table. It bounds how long such rows stay cached.
	// Default 1s. Only tables in Options.Tables that are partitioned are read.
	PartitionCheckInterval time.Duration
	// MaxTxChanges bounds the memory a large transaction takes while it is decoded: past
	// this many row changes, its changes are kept as one keyless change per table
	// (Tx.Whole), which a handler treats as touching every row of the table. Default
	// 100000, about 10 MB of keys; a backfill of tens of millions of rows then costs
	// a whole-table invalidation per table instead of the worker's memory.
	MaxTxChanges int
	// StandbySnapshotInterval is how often, while transactions arrive, the stream asks
	// Postgres to log the transactions running (pg_log_standby_snapshot(), Postgres 16
	// and later) and reports its position at once past that record; a stream that
	// stops with everything handled waits up to 2s for the server to pass the last
	// one. The slot's restart_lsn, where decoding starts again after a restart, moves
	// only at such a record confirmed by the client, and Postgres logs one by itself
	// only every 15s (the background writer): a worker restarted after a busy spell
	// would decode again the WAL of up to half a minute it had confirmed (measured: 37
	// MB, 0.6s) before the changes it has not seen. Default 1s; negative turns it off.
	// The role needs GRANT EXECUTE ON FUNCTION pg_log_standby_snapshot() (in the
	// database streamed); without it, on an older Postgres or on a standby, the
	// stream logs that once and goes on without.
	StandbySnapshotInterval time.Duration
	// ReceiveBuffer, when positive, is the replication connection's socket receive
	// buffer (SO_RCVBUF) in bytes. A small one (tens of KB) lets the walsender's changes
	// travel in large TCP segments rather than one each: measured, it doubled the
	// changes a second and halved the worker's CPU with narrow rows, and did worse than
	// the kernel's sizing with rows of some 200 bytes (see recvbuf.go): measure on your
	// rows. It caps the stream at ReceiveBuffer per round trip. Zero (the default)
	// leaves the kernel's sizing.
	ReceiveBuffer int
	// Logger receives the stream's logs. Nil discards them.
	Logger *slog.Logger
}

const (
	defaultStatusInterval = 10 * time.Second
	defaultMinBackoff     = 100 * time.Millisecond
	defaultMaxBackoff     = 10 * time.Second
	defaultPartitionCheck = time.Second
	defaultMaxTxChanges   = 100000
	defaultSnapshotEvery  = time.Second
	maxIdentifierLen      = 63 // NAMEDATALEN - 1
)

// table is an entry of Options.Tables.
type table struct {
	spec   string // as written in Options.Tables
	schema string // empty: found through search_path
	name   string
}

// quoted returns the table's name as SQL.
func (t table) quoted() string {
	if t.schema == "" {
		return pgx.Identifier{t.name}.Sanitize()
	}
	return pgx.Identifier{t.schema, t.name}.Sanitize()
}

// withDefaults checks o and returns a copy with defaults filled in, and the parsed tables.
func (o Options) withDefaults() (Options, []table, error) {
	if !validSlot(o.Slot) {
		return o, nil, fmt.Errorf("%w: Options.Slot %q: a slot name is 1 to %d characters of a-z, 0-9 and _", ErrConfig, o.Slot, maxIdentifierLen)
	}
	if !validPublication(o.Publication) {
		return o, nil, fmt.Errorf("%w: Options.Publication %q: use a plain lower-case identifier, [a-z_][a-z0-9_]*, at most %d characters", ErrConfig, o.Publication, maxIdentifierLen)
	}
	if len(o.Tables) == 0 {
		return o, nil, fmt.Errorf("%w: Options.Tables is empty: name at least one table to publish", ErrConfig)
	}
	tables := make([]table, 0, len(o.Tables))
	seen := make(map[table]bool)
	for i, spec := range o.Tables {
		t := table{spec: spec, name: spec}
		if schema, name, ok := strings.Cut(spec, "."); ok {
			t.schema, t.name = schema, name
			if err := checkIdentifier(schema); err != nil {
				return o, nil, fmt.Errorf("%w: Options.Tables[%d] %q: schema: %v", ErrConfig, i, spec, err)
			}
		}
		if err := checkIdentifier(t.name); err != nil {
			return o, nil, fmt.Errorf("%w: Options.Tables[%d] %q: table: %v", ErrConfig, i, spec, err)
		}
		key := table{schema: t.schema, name: t.name}
		if seen[key] {
			return o, nil, fmt.Errorf("%w: Options.Tables[%d] %q is listed twice", ErrConfig, i, spec)
		}
		seen[key] = true
		tables = append(tables, t)
	}
	o.Tables = append([]string(nil), o.Tables...)

	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"StatusInterval", &o.StatusInterval, defaultStatusInterval},
		{"MinBackoff", &o.MinBackoff, defaultMinBackoff},
		{"MaxBackoff", &o.MaxBackoff, defaultMaxBackoff},
		{"PartitionCheckInterval", &o.PartitionCheckInterval, defaultPartitionCheck},
	} {
		if *d.v < 0 {
			return o, nil, fmt.Errorf("%w: Options.%s is negative (%v): use 0 for the default, %v", ErrConfig, d.name, *d.v, d.def)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	switch {
	case o.MaxTxChanges < 0:
		return o, nil, fmt.Errorf("%w: Options.MaxTxChanges is negative (%d): use 0 for the default, %d", ErrConfig, o.MaxTxChanges, defaultMaxTxChanges)
	case o.MaxTxChanges == 0:
		o.MaxTxChanges = defaultMaxTxChanges
	}
	if o.StandbySnapshotInterval == 0 {
		o.StandbySnapshotInterval = defaultSnapshotEvery
	}
	if o.MaxBackoff < o.MinBackoff {
		return o, nil, fmt.Errorf("%w: Options.MaxBackoff (%v) is less than Options.MinBackoff (%v)", ErrConfig, o.MaxBackoff, o.MinBackoff)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, tables, nil
}

func validSlot(s string) bool {
	if len(s) == 0 || len(s) > maxIdentifierLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func validPublication(s string) bool {
	return validSlot(s) && !('0' <= s[0] && s[0] <= '9')
}

func checkIdentifier(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty name")
	case len(s) > maxIdentifierLen:
		return fmt.Errorf("longer than %d bytes; Postgres would truncate it", maxIdentifierLen)
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("contains a NUL byte")
	case !utf8.ValidString(s):
		return fmt.Errorf("not valid UTF-8")
	}
	return nil
}
