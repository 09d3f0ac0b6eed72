package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// Gap reasons passed to [Handler.Gap].
const (
	// GapSlotCreated: the slot did not exist, so nothing recorded the changes made
	// before now.
	GapSlotCreated = "slot created"
	// GapSlotInvalidated: Postgres invalidated the slot (it removed WAL the slot still
	// needed); the slot was dropped and created again.
	GapSlotInvalidated = "slot invalidated"
	// GapPublicationCreated: the publication did not exist but the slot did; the slot
	// could not decode its older changes, so it was dropped and created again.
	GapPublicationCreated = "publication created"
	// GapTableAdded: the tables were added to the publication, so their earlier
	// changes were not streamed.
	GapTableAdded = "table added to publication"
	// GapPublicationAltered: the publication published partitioned tables via their
	// root, which leaves TRUNCATEs of single partitions out; it was altered.
	GapPublicationAltered = "publication altered"
	// GapPartitions: partitions of a partitioned table were attached, detached or
	// dropped, which changes its rows without a row change in the stream; or the
	// Stream has just started and cannot know whether they were while it was away.
	GapPartitions = "partitions may have changed"
	// GapRecorded: a gap recorded through [GapRecorder] before it opened, whose Gap
	// call never returned nil: the process died or failed in between.
	GapRecorded = "gap recorded by an earlier run"
)

// GapRecorder is a [Handler] that records gaps durably, which closes the one window
// Gap alone leaves open: a process that dies after the slot was created (or tables
// were added to the publication) and before Gap returned would, on its next run, find
// the slot and no gap. With a GapRecorder, Run records the gap before opening it and
// calls Gap for every recorded table at the start of each session.
type GapRecorder interface {
	Handler
	// RecordGap stores durably that tables owe a Gap call. Run calls it before it
	// creates or recreates the slot, creates the publication or adds tables to it, and
	// goes no further until it returns nil.
	RecordGap(ctx context.Context, tables []string, reason string) error
	// RecordedGap returns the tables recorded and not yet cleared. Gap returning nil
	// for tables must clear their records. Run calls RecordedGap as each session
	// starts, once it found the slot free (not while a standby waits for it), and
	// passes what it returns to Gap, with reason GapRecorded, before streaming.
	RecordedGap(ctx context.Context) ([]string, error)
}

// recordGap records a gap about to open, when the handler can.
func (s *Stream) recordGap(ctx context.Context, tables []string, reason string) error {
	r, ok := s.h.(GapRecorder)
	if !ok {
		return nil
	}
	if err := r.RecordGap(ctx, s.qualify(tables), reason); err != nil {
		return fmt.Errorf("cdc: handler: RecordGap(%q): %w", reason, err)
	}
	return nil
}

// queryTimeout bounds each catalog query and the connection attempts of a session.
// Creating a slot is not bounded: it waits for running transactions to end.
const queryTimeout = 30 * time.Second

// gap is a Gap call still owed to the handler. It survives failed sessions, so a gap
// found once is reported even if the handler or the connection fails first.
type gap struct {
	reason string
	tables []string // specs from Options.Tables, in their order
}

// add merges a gap: a slot-wide reason covers every table and wins over a table-level one.
func (g *gap) add(reason string, tables []string) {
	if g.reason == "" || reason != GapTableAdded && reason != GapPublicationAltered {
		g.reason = reason
	}
	for _, t := range tables {
		if !slices.Contains(g.tables, t) {
			g.tables = append(g.tables, t)
		}
	}
}

// catalogTable is an entry of Options.Tables as the catalog resolved it.
type catalogTable struct {
	table
	oid      uint32
	schema   string // actual names, not as written
	name     string
	kind     string
	identity string
	hasPK    bool
	owned    bool // the role may alter it: it owns it, or is a member of its owner
	owner    string
	// pk: the primary-key columns; identityCols: the columns of the replica identity
	// index (REPLICA IDENTITY USING INDEX).
	pk, identityCols []string
	// partitions of a partitioned table, at every level.
	partitions []partition
}

// partition is a partition of a published partitioned table.
type partition struct {
	schema, name string
	identity     string
	pk           []string
	identityCols []string
}

// name returns the table as Gap and RecordGap name it: schema.name, as the catalog spells
// them.
func (t catalogTable) qualifiedName() string { return t.schema + "." + t.name }

func (t catalogTable) quoted() string { return pgx.Identifier{t.schema, t.name}.Sanitize() }

// slotState is the slot as pg_replication_slots shows it. to_jsonb of the row keeps the
// query the same across Postgres versions that add columns.
type slotState struct {
	SlotType           string  `json:"slot_type"`
	Plugin             *string `json:"plugin"`
	Database           *string `json:"database"`
	ActivePID          *int    `json:"active_pid"`
	WALStatus          *string `json:"wal_status"`
	ConfirmedFlushLSN  *string `json:"confirmed_flush_lsn"`
	InvalidationReason *string `json:"invalidation_reason"` // Postgres 17
	Conflicting        *bool   `json:"conflicting"`         // Postgres 16
}

// prepare checks the server and the role, ensures the publication and the slot, and
// returns the slot's confirmed position. Gaps found are added to s.gap.
func (s *Stream) prepare(ctx context.Context) (LSN, error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return 0, err
	}
	defer closeConn(ctx, conn)

	if err := s.checkServer(ctx, conn); err != nil {
		return 0, err
	}
	tables, err := s.resolveTables(ctx, conn)
	if err != nil {
		return 0, err
	}
	if changed := partitionsChanged(s.catalog, tables); len(changed) > 0 {
		s.gap.add(GapPartitions, s.qualify(changed))
	}
	s.catalog = tables
	if s.others, err = s.publishedOthers(ctx, conn, tables); err != nil {
		return 0, err
	}
	if s.domains, err = domains(ctx, conn); err != nil {
		return 0, err
	}
	pubCreated, err := s.ensurePublication(ctx, conn, tables)
	if err != nil {
		return 0, err
	}
	lsn, err := s.ensureSlot(ctx, conn, pubCreated)
	if err != nil {
		return 0, err
	}
	// Read only once the slot is free for this session: a standby that read them while
	// another process held the slot would take that process's records, soon cleared, for
	// its own and flush the tables when it takes over.
	if r, ok := s.h.(GapRecorder); ok {
		recorded, err := r.RecordedGap(ctx)
		if err != nil {
			return 0, fmt.Errorf("cdc: handler: RecordedGap: %w", err)
		}
		if len(recorded) > 0 {
			s.gap.add(GapRecorded, s.qualify(recorded))
		}
	}
	return lsn, nil
}

// connect opens a connection for catalog queries.
func (s *Stream) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(s.connString)
	if err != nil {
		return nil, fmt.Errorf("%w: connection string: %v", ErrConfig, err)
	}
	delete(cfg.RuntimeParams, "replication")
	cctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, classify("connect", err)
	}
	return conn, nil
}

func closeConn(ctx context.Context, conn *pgx.Conn) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = conn.Close(cctx)
}

// partitionsChangedError: the partitions of a table changed while the session streamed.
// The session owes a Gap for it, whatever the catalog says when the next one begins (the
// change may have been undone by then, after rows were cached).
type partitionsChangedError struct{ spec, table string }

func (e *partitionsChangedError) Error() string {
	return fmt.Sprintf("%v: the partitions of %s changed", ErrCatalogChanged, e.table)
}

func (e *partitionsChangedError) Unwrap() error { return ErrCatalogChanged }

// watchPartitions reads the partitions of the session's partitioned tables every
// PartitionCheckInterval and returns an error wrapping ErrCatalogChanged once they
// differ from what the session began with: attaching, detaching or dropping a partition
// changes the table's rows with no row change in the stream, so the next session
// invalidates the table (GapPartitions). It returns nil when ctx is done.
func (s *Stream) watchPartitions(ctx context.Context, tables []catalogTable) error {
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer closeConn(ctx, conn)
	t := time.NewTicker(s.opts.PartitionCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, tab := range tables {
			qctx, cancel := context.WithTimeout(ctx, queryTimeout)
			now, err := partitionsOf(qctx, conn, tab)
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				return err
			}
			same := slices.EqualFunc(tab.partitions, now, func(a, b partition) bool { return a.schema == b.schema && a.name == b.name })
			if !same {
				return &partitionsChangedError{spec: tab.spec, table: tab.quoted()}
			}
		}
	}
}

func (s *Stream) checkServer(ctx context.Context, conn *pgx.Conn) error {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var level string
	if err := conn.QueryRow(qctx, `SHOW wal_level`).Scan(&level); err != nil {
		return classify("SHOW wal_level", err)
	}
	if level != "logical" {
		return fmt.Errorf("%w: the server runs with wal_level=%s: set wal_level=logical (postgresql.conf, or ALTER SYSTEM SET wal_level = logical as a superuser) and restart Postgres", ErrWalLevel, level)
	}
	var (
		user              string
		super, replicator bool
	)
	err := conn.QueryRow(qctx, `SELECT current_user, rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user`).
		Scan(&user, &super, &replicator)
	if err != nil {
		return classify("read the role's attributes", err)
	}
	if !super && !replicator {
		return fmt.Errorf("%w: role %q lacks the REPLICATION attribute, which logical replication needs: ALTER ROLE %s REPLICATION (as a superuser)",
			ErrPermission, user, pgx.Identifier{user}.Sanitize())
	}
	return nil
}

func (s *Stream) resolveTables(ctx context.Context, conn *pgx.Conn) ([]catalogTable, error) {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	out := make([]catalogTable, 0, len(s.tables))
	for _, t := range s.tables {
		ct := catalogTable{table: t}
		err := conn.QueryRow(qctx, `
			SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relreplident::text,
			       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
			       pg_has_role(c.relowner, 'USAGE'), pg_get_userbyid(c.relowner)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.oid = to_regclass($1)`, t.quoted()).
			Scan(&ct.oid, &ct.schema, &ct.name, &ct.kind, &ct.identity, &ct.hasPK, &ct.owned, &ct.owner)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("%w: %s (Options.Tables entry %q): create it before starting the stream; names are matched exactly, with their letter case, and a name without a schema is looked up in the role's search_path",
				ErrTableMissing, t.quoted(), t.spec)
		}
		if err != nil {
			return nil, classify("look up table "+t.quoted(), err)
		}
		if ct.kind != "r" && ct.kind != "p" {
			return nil, fmt.Errorf("%w: %s (Options.Tables entry %q) is not a table (relkind %s); only tables can be published", ErrConfig, ct.quoted(), t.spec, ct.kind)
		}
		if ct.pk, ct.identityCols, err = indexColumns(qctx, conn, ct.oid); err != nil {
			return nil, err
		}
		if err := checkIdentity(ct.quoted(), ct.identity, ct.pk, ct.identityCols); err != nil {
			return nil, err
		}
		if ct.kind == "p" {
			if ct.partitions, err = partitionsOf(qctx, conn, ct); err != nil {
				return nil, err
			}
		}
		s.names[t.spec] = ct.qualifiedName()
		out = append(out, ct)
	}
	s.mu.Lock()
	s.resolved = s.qualify(s.opts.Tables)
	s.mu.Unlock()
	return out, nil
}

// Tables returns the stream's tables as schema.name (as Handler.Gap names them), once
// a session has resolved them through the catalog; nil before.
func (s *Stream) Tables() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.resolved)
}

// indexColumns returns the columns of a table's primary key and of its replica
// identity index, each in the index's order.
func indexColumns(ctx context.Context, conn *pgx.Conn, oid uint32) (pk, identity []string, err error) {
	err = conn.QueryRow(ctx, `
		SELECT coalesce((SELECT array_agg(a.attname::text ORDER BY k.n)
		                 FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, n), pg_attribute a
		                 WHERE i.indrelid = $1 AND i.indisprimary AND a.attrelid = $1 AND a.attnum = k.attnum), '{}'),
		       coalesce((SELECT array_agg(a.attname::text ORDER BY k.n)
		                 FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, n), pg_attribute a
		                 WHERE i.indrelid = $1 AND i.indisreplident AND a.attrelid = $1 AND a.attnum = k.attnum), '{}')`,
		oid).Scan(&pk, &identity)
	if err != nil {
		return nil, nil, classify("read the primary key and replica identity of a table", err)
	}
	return pk, identity, nil
}

// checkIdentity refuses a table whose changes would not carry the primary key of every
// row they touch: the invalidation of such rows would be silently lost.
func checkIdentity(table, identity string, pk, identityCols []string) error {
	switch {
	case len(pk) == 0:
		return fmt.Errorf("%w: table %s has no primary key: cached rows are keyed by it, and without one its changes cannot name the rows they touch (Postgres also rejects its UPDATEs and DELETEs once it is published under REPLICA IDENTITY DEFAULT); add one: ALTER TABLE %s ADD PRIMARY KEY (...)",
			ErrConfig, table, table)
	case identity == "n":
		return fmt.Errorf("%w: table %s has REPLICA IDENTITY NOTHING: Postgres rejects its UPDATEs and DELETEs once it is published, and its deletions would carry no key; ALTER TABLE %s REPLICA IDENTITY DEFAULT",
			ErrConfig, table, table)
	case identity == "i":
		for _, c := range pk {
			if !slices.Contains(identityCols, c) {
				return fmt.Errorf("%w: table %s has REPLICA IDENTITY USING INDEX on columns (%s), which lack primary-key column %q: its DELETEs and primary-key changes would not say which row they touched; ALTER TABLE %s REPLICA IDENTITY DEFAULT (or FULL)",
					ErrConfig, table, strings.Join(identityCols, ", "), c, table)
			}
		}
	}
	return nil
}

// partitionsOf returns the partitions of a partitioned table, checked as its own
// rows are: each has its own replica identity.
func partitionsOf(ctx context.Context, conn *pgx.Conn, t catalogTable) ([]partition, error) {
	rows, err := conn.Query(ctx, `
		SELECT c.oid, n.nspname, c.relname, c.relreplident::text
		FROM pg_partition_tree($1) p JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE p.relid <> $1::regclass ORDER BY p.level, n.nspname, c.relname`, t.oid)
	if err != nil {
		return nil, classify("list the partitions of "+t.quoted(), err)
	}
	type row struct {
		oid                    uint32
		schema, name, identity string
	}
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.oid, &x.schema, &x.name, &x.identity)
	})
	if err != nil {
		return nil, classify("list the partitions of "+t.quoted(), err)
	}
	out := make([]partition, 0, len(found))
	for _, f := range found {
		p := partition{schema: f.schema, name: f.name, identity: f.identity}
		if p.pk, p.identityCols, err = indexColumns(ctx, conn, f.oid); err != nil {
			return nil, err
		}
		name := pgx.Identifier{f.schema, f.name}.Sanitize()
		if len(p.pk) == 0 {
			p.pk = t.pk // a partition of a partitioned table with a key has it too
		}
		if err := checkIdentity(fmt.Sprintf("%s (a partition of %s)", name, t.quoted()), p.identity, p.pk, p.identityCols); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// partitionsChanged returns the partitioned tables of now whose partitions differ from
// before, or all of them when before is nil (the Stream has just started, and cannot
// know what changed while it was away).
func partitionsChanged(before, now []catalogTable) []string {
	var out []string
	for _, t := range now {
		if t.kind != "p" {
			continue
		}
		i := slices.IndexFunc(before, func(b catalogTable) bool { return b.oid == t.oid })
		if before == nil || i < 0 || !slices.EqualFunc(before[i].partitions, t.partitions, func(a, b partition) bool {
			return a.schema == b.schema && a.name == b.name
		}) {
			out = append(out, t.spec)
		}
	}
	return out
}

// publishedOthers returns the tables the publication publishes besides tables and their
// partitions: their changes are delivered as they are (see Decoder.SetOthers).
func (s *Stream) publishedOthers(ctx context.Context, conn *pgx.Conn, tables []catalogTable) ([][2]string, error) {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, err := conn.Query(qctx, `SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1`, s.opts.Publication)
	if err != nil {
		return nil, classify("list the tables of the publication", err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var t [2]string
		return t, r.Scan(&t[0], &t[1])
	})
	if err != nil {
		return nil, classify("list the tables of the publication", err)
	}
	ours := make(map[[2]string]bool)
	for _, t := range tables {
		ours[[2]string{t.schema, t.name}] = true
		for _, p := range t.partitions {
			ours[[2]string{p.schema, p.name}] = true
		}
	}
	return slices.DeleteFunc(all, func(t [2]string) bool { return ours[t] }), nil
}

// qualify returns tables, entries of Options.Tables or names as Gap takes them, as
// Gap takes them: schema.name as the catalog spells them.
func (s *Stream) qualify(tables []string) []string {
	out := make([]string, len(tables))
	for i, t := range tables {
		if q, ok := s.names[t]; ok {
			t = q
		}
		out[i] = t
	}
	return out
}

// ensurePublication creates the publication, or adds the tables it lacks, and reports
// whether it created it.
func (s *Stream) ensurePublication(ctx context.Context, conn *pgx.Conn, tables []catalogTable) (created bool, err error) {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	pub := pgx.Identifier{s.opts.Publication}.Sanitize()
	var (
		allTables, ins, upd, del, trunc, viaRoot, ownsPub bool
		pubOwner                                          string
	)
	err = conn.QueryRow(qctx, `
		SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot,
		       pg_has_role(pubowner, 'USAGE'), pg_get_userbyid(pubowner)
		FROM pg_publication WHERE pubname = $1`, s.opts.Publication).
		Scan(&allTables, &ins, &upd, &del, &trunc, &viaRoot, &ownsPub, &pubOwner)
	if errors.Is(err, pgx.ErrNoRows) {
		// Should the slot exist, it is recreated below; record that first.
		if err := s.recordGap(ctx, s.opts.Tables, GapPublicationCreated); err != nil {
			return false, err
		}
		return true, s.createPublication(qctx, conn, tables)
	}
	if err != nil {
		return false, classify("look up publication "+pub, err)
	}
	if !ins || !upd || !del || !trunc {
		return false, fmt.Errorf("%w: publication %s does not publish every kind of change (insert=%v update=%v delete=%v truncate=%v), so changes would be missed: ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate')",
			ErrConfig, pub, ins, upd, del, trunc, pub)
	}
	if viaRoot {
		if err := s.publishViaPartitions(qctx, conn, tables, pub, ownsPub, pubOwner); err != nil {
			return false, err
		}
	}
	if allTables {
		return false, nil
	}

	// A table counts as published when the publication names it, or names its schema
	// or, for a partition, its root (pg_publication_tables covers both).
	rows, err := conn.Query(qctx, `
		SELECT pr.prrelid FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = $1
		UNION
		SELECT coalesce(to_regclass(quote_ident(schemaname) || '.' || quote_ident(tablename))::oid, 0) FROM pg_publication_tables WHERE pubname = $1`,
		s.opts.Publication)
	if err != nil {
		return false, classify("list the tables of publication "+pub, err)
	}
	published, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return false, classify("list the tables of publication "+pub, err)
	}
	var missing []catalogTable
	for _, t := range tables {
		if !slices.Contains(published, t.oid) {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return false, nil
	}
	if !ownsPub {
		return false, fmt.Errorf("%w: publication %s lacks %s, and adding them needs ownership of the publication, which belongs to %q: add them as its owner (ALTER PUBLICATION %s ADD TABLE %s) or connect as that role",
			ErrPermission, pub, tableList(missing), pubOwner, pub, tableList(missing))
	}
	if err := checkOwned(missing, pub); err != nil {
		return false, err
	}
	specs := make([]string, len(missing))
	for i, t := range missing {
		specs[i] = t.spec
	}
	if err := s.recordGap(ctx, specs, GapTableAdded); err != nil {
		return false, err
	}
	sql := "ALTER PUBLICATION " + pub + " ADD TABLE " + tableList(missing)
	if _, err := conn.Exec(qctx, sql); err != nil {
		return false, classify(sql, err)
	}
	s.log.Info("cdc: added tables to the publication", slog.String(logPublication, s.opts.Publication), slog.Any(logTables, specs))
	s.gap.add(GapTableAdded, s.qualify(specs))
	return false, nil
}

// publishViaPartitions makes a publication created with publish_via_partition_root
// publish the changes of partitioned tables under their partitions' names: under the
// root's, a TRUNCATE of one partition is not published at all, and the rows it emptied
// would stay cached. The decoder reports changes of partitions as changes of their
// table. It records a gap first: truncated partitions were not published until now.
func (s *Stream) publishViaPartitions(ctx context.Context, conn *pgx.Conn, tables []catalogTable, pub string, owns bool, owner string) error {
	var partitioned []string
	for _, t := range tables {
		if t.kind == "p" {
			partitioned = append(partitioned, t.spec)
		}
	}
	if len(partitioned) == 0 {
		return nil
	}
	sql := "ALTER PUBLICATION " + pub + " SET (publish_via_partition_root = false)"
	if !owns {
		return fmt.Errorf("%w: publication %s publishes partitioned tables %s via their root, under which a TRUNCATE of one partition is not published and the rows it emptied would stay cached; the publication belongs to %q: as its owner, %s",
			ErrConfig, pub, strings.Join(partitioned, ", "), owner, sql)
	}
	if err := s.recordGap(ctx, partitioned, GapPublicationAltered); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		return classify(sql, err)
	}
	s.log.Warn("cdc: the publication published partitioned tables via their root, which hides TRUNCATEs of partitions; it now publishes them under their partitions' names",
		slog.String(logPublication, s.opts.Publication), slog.Any(logTables, partitioned))
	s.gap.add(GapPublicationAltered, s.qualify(partitioned))
	return nil
}

func (s *Stream) createPublication(ctx context.Context, conn *pgx.Conn, tables []catalogTable) error {
	pub := pgx.Identifier{s.opts.Publication}.Sanitize()
	var (
		canCreate bool
		dbName    string
	)
	if err := conn.QueryRow(ctx, `SELECT has_database_privilege(current_database(), 'CREATE'), current_database()`).Scan(&canCreate, &dbName); err != nil {
		return classify("check the CREATE privilege on the database", err)
	}
	if !canCreate {
		return fmt.Errorf("%w: creating publication %s needs the CREATE privilege on database %q: GRANT CREATE ON DATABASE %s TO the role, or create it beforehand: CREATE PUBLICATION %s FOR TABLE %s",
			ErrPermission, pub, dbName, pgx.Identifier{dbName}.Sanitize(), pub, tableList(tables))
	}
	if err := checkOwned(tables, pub); err != nil {
		return err
	}
	// Without publish_via_partition_root (see publishViaPartitions): changes of a
	// partitioned table arrive under the names of its partitions.
	sql := "CREATE PUBLICATION " + pub + " FOR TABLE " + tableList(tables)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return classify(sql, err)
	}
	s.log.Info("cdc: created the publication", slog.String(logPublication, s.opts.Publication))
	return nil
}

func checkOwned(tables []catalogTable, pub string) error {
	for _, t := range tables {
		if !t.owned {
			return fmt.Errorf("%w: publishing table %s needs ownership of it, which belongs to %q: ALTER TABLE %s OWNER TO the role, or add it as its owner: ALTER PUBLICATION %s ADD TABLE %s",
				ErrPermission, t.quoted(), t.owner, t.quoted(), pub, t.quoted())
		}
	}
	return nil
}

func tableList(tables []catalogTable) string {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.quoted()
	}
	return strings.Join(names, ", ")
}

// ensureSlot creates the slot if missing and replaces it if Postgres invalidated it or
// if it predates a publication created just now. It returns the slot's confirmed
// position.
func (s *Stream) ensureSlot(ctx context.Context, conn *pgx.Conn, pubCreated bool) (LSN, error) {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	slot := s.opts.Slot
	var st slotState
	err := conn.QueryRow(qctx, `SELECT to_jsonb(s) FROM pg_replication_slots s WHERE slot_name = $1`, slot).Scan(&st)
	if errors.Is(err, pgx.ErrNoRows) {
		return s.createSlot(ctx, conn, GapSlotCreated)
	}
	if err != nil {
		return 0, classify("look up slot "+slot, err)
	}

	if pubCreated {
		// Remembered until the slot is replaced, in case this session fails first.
		s.staleSlot = GapPublicationCreated
	}
	var dbName string
	if err := conn.QueryRow(qctx, `SELECT current_database()`).Scan(&dbName); err != nil {
		return 0, classify("read the database name", err)
	}
	switch {
	case st.SlotType != "logical":
		return 0, fmt.Errorf("%w: slot %q is a %s slot; choose another Options.Slot", ErrConfig, slot, st.SlotType)
	case st.Plugin == nil || *st.Plugin != "pgoutput":
		return 0, fmt.Errorf("%w: slot %q uses output plugin %s, not pgoutput; choose another Options.Slot", ErrConfig, slot, deref(st.Plugin))
	case st.Database == nil || *st.Database != dbName:
		return 0, fmt.Errorf("%w: slot %q belongs to database %s, not %s; slot names are per server: choose another Options.Slot", ErrConfig, slot, deref(st.Database), dbName)
	case st.ActivePID != nil:
		return 0, fmt.Errorf("%w: slot %q is streamed by server process %d", ErrSlotInUse, slot, *st.ActivePID)
	}

	reason := ""
	switch {
	case deref(st.WALStatus) == "lost" || st.InvalidationReason != nil || st.Conflicting != nil && *st.Conflicting:
		reason = GapSlotInvalidated
		s.log.Warn("cdc: Postgres invalidated the slot; dropping and recreating it",
			slog.String("wal_status", deref(st.WALStatus)), slog.String("invalidation_reason", deref(st.InvalidationReason)))
	case s.staleSlot != "":
		reason = s.staleSlot
		s.log.Warn("cdc: the publication was missing while the slot existed; the slot cannot decode changes from before the publication, so it is recreated",
			slog.String(logPublication, s.opts.Publication))
	case deref(st.WALStatus) == "unreserved":
		s.log.Warn("cdc: the slot is about to lose WAL it needs (wal_status unreserved); it will be invalidated unless it catches up")
	}
	if reason != "" {
		if _, err := conn.Exec(qctx, `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
			return 0, classify("drop slot "+slot, err)
		}
		return s.createSlot(ctx, conn, reason)
	}
	if st.ConfirmedFlushLSN == nil {
		return 0, fmt.Errorf("cdc: slot %q has no confirmed position yet", slot)
	}
	lsn, err := pglogrepl.ParseLSN(*st.ConfirmedFlushLSN)
	if err != nil {
		return 0, fmt.Errorf("cdc: slot %q: confirmed_flush_lsn %q: %w", slot, *st.ConfirmedFlushLSN, err)
	}
	return lsn, nil
}

func (s *Stream) createSlot(ctx context.Context, conn *pgx.Conn, reason string) (LSN, error) {
	slot := s.opts.Slot
	if err := s.recordGap(ctx, s.opts.Tables, reason); err != nil {
		return 0, err
	}
	var text string
	// No timeout: creating a logical slot waits for the transactions running now to end.
	err := conn.QueryRow(ctx, `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, slot).Scan(&text)
	if err != nil {
		return 0, classify("create slot "+slot, err)
	}
	lsn, err := pglogrepl.ParseLSN(text)
	if err != nil {
		return 0, fmt.Errorf("cdc: create slot %s: position %q: %w", slot, text, err)
	}
	s.staleSlot = ""
	s.log.Info("cdc: created the replication slot", slog.String(logLSN, lsn.String()), slog.String(logReason, reason))
	// The slot exists from here on; should the process die before Gap returns, the
	// next run finds the slot and calls Gap only if the handler is a GapRecorder.
	s.gap.add(reason, s.qualify(s.opts.Tables))
	return lsn, nil
}

func deref[T any](p *T) string {
	if p == nil {
		return "null"
	}
	return fmt.Sprint(*p)
}

// domains returns the base type of every domain, by the domain's OID, through domains
// over domains: a column of a domain type arrives with the domain's OID, and its values
// are spelled as the base type's (see Column.BaseTypeOID). A domain created after the
// session began is read as its own type until the next session.
func domains(ctx context.Context, conn *pgx.Conn) (map[uint32]uint32, error) {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, err := conn.Query(qctx, `SELECT oid::int8, typbasetype::int8 FROM pg_type WHERE typtype = 'd'`)
	if err != nil {
		return nil, fmt.Errorf("cdc: read domain types: %w", err)
	}
	base := make(map[uint32]uint32)
	for rows.Next() {
		var oid, b int64
		if err := rows.Scan(&oid, &b); err != nil {
			return nil, fmt.Errorf("cdc: read domain types: %w", err)
		}
		base[uint32(oid)] = uint32(b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cdc: read domain types: %w", err)
	}
	for oid := range base {
		// A domain over a domain: follow to the type that is none (at most len steps).
		for range len(base) {
			next, ok := base[base[oid]]
			if !ok {
				break
			}
			base[oid] = next
		}
	}
	return base, nil
}
