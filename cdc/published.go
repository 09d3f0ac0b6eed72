package cdc

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Publications returns the publications that publish table, or any partition of it,
// read through conn, a normal connection the caller owns; ok is false when Postgres
// has no such table. table is spelled as SQL does, schema-qualified where it is not in
// the role's search_path (as keys.QualifiedTable spells it, which is how the
// applications' registries name the tables they cache). A table no publication
// publishes is invalidated by no worker: its cached rows go stale when it changes.
func Publications(ctx context.Context, conn *pgx.Conn, table string) (pubs []string, ok bool, err error) {
	const q = `
SELECT to_regclass($1) IS NOT NULL,
       COALESCE((SELECT array_agg(DISTINCT p.pubname ORDER BY p.pubname)
                   FROM (SELECT to_regclass($1) AS relid
                         UNION SELECT relid FROM pg_partition_tree(to_regclass($1))) t
                   JOIN pg_class c ON c.oid = t.relid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_publication_tables p ON p.schemaname = n.nspname AND p.tablename = c.relname), '{}')`
	if err := conn.QueryRow(ctx, q, table).Scan(&ok, &pubs); err != nil {
		return nil, false, fmt.Errorf("cdc: the publications of %s: %w", table, err)
	}
	return pubs, ok, nil
}
