package cdc_test

import (
	"context"
	"slices"
	"testing"

	"github.com/pgcache/pgcache/cdc"
)

// TestPublications: cdc.Publications names the publications that publish a table,
// through its partitions too (a publication of partitions under their own names lists
// the leaves, not the root), finds schema-qualified and quoted names, says nothing
// publishes a table outside every publication, and tells a missing table apart.
func TestPublications(t *testing.T) {
	t.Parallel()
	db := servers.Postgres(t).NewDatabase(t)
	conn := connect(t, db.URL)
	exec(t, conn,
		`CREATE TABLE plain (id bigint PRIMARY KEY)`,
		`CREATE TABLE lonely (id bigint PRIMARY KEY)`,
		`CREATE SCHEMA "Billing"`,
		`CREATE TABLE "Billing"."Invoices" (id bigint PRIMARY KEY)`,
		`CREATE TABLE events (id bigint, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)`,
		`CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`,
		`CREATE PUBLICATION a FOR TABLE plain, "Billing"."Invoices"`,
		`CREATE PUBLICATION b FOR TABLE plain, events WITH (publish_via_partition_root = false)`,
	)
	for _, c := range []struct {
		table string
		want  []string
		ok    bool
	}{
		{"public.plain", []string{"a", "b"}, true},
		{"plain", []string{"a", "b"}, true},
		{`"Billing"."Invoices"`, []string{"a"}, true},
		{"public.events", []string{"b"}, true},
		{"public.lonely", nil, true},
		{"public.ghosts", nil, false},
		{"nowhere.plain", nil, false},
	} {
		pubs, ok, err := cdc.Publications(context.Background(), conn, c.table)
		if err != nil {
			t.Fatalf("%s: %v", c.table, err)
		}
		if ok != c.ok || !slices.Equal(pubs, c.want) && len(pubs)+len(c.want) > 0 {
			t.Errorf("%s: published by %q (exists %v), want %q (exists %v)", c.table, pubs, ok, c.want, c.ok)
		}
	}
}
