package cdc_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"

	"github.com/pgcache/pgcache/cdc"
)

// printer is a Handler that prints what it receives.
type printer struct{}

func (printer) Gap(ctx context.Context, tables []string, reason string) error {
	fmt.Printf("gap (%s): invalidate everything cached for %q\n", reason, tables)
	return nil
}

func (printer) Handle(ctx context.Context, tx *cdc.Tx) error {
	for _, c := range tx.Changes {
		fmt.Printf("%s %s.%s key=%q old=%q\n", c.Kind, c.Relation.Schema, c.Relation.Name, c.Key, c.OldKey)
	}
	return nil // the transaction's end LSN may now be confirmed to the slot
}

// A Stream needs a server, so this example is compiled but not run.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	s, err := cdc.NewStream("postgres://pgcache_repl:secret@localhost:5432/shop", cdc.Options{
		Slot:        "pgcache",
		Publication: "pgcache",
		Tables:      []string{"public.users", "Sales.Order Items"},
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}, printer{})
	if err != nil {
		log.Fatal(err) // wraps cdc.ErrConfig and says what to fix
	}
	// Run returns nil when ctx is done, and a fatal error (wal_level, privileges, a
	// missing table) at once; everything else it retries.
	if err := s.Run(ctx); err != nil {
		if errors.Is(err, cdc.ErrWalLevel) {
			log.Fatal("enable logical replication first: ", err)
		}
		log.Fatal(err)
	}
}

// The decoder works on bytes alone; here, a Relation and a Begin, Insert and Commit as
// pgoutput sends them.
func ExampleDecoder() {
	d := cdc.NewDecoder()
	for _, m := range [][]byte{
		encRelation(16390, "public", "users", 'd', col{"id", oidInt8, true}, col{"email", oidText, false}),
		encBegin(0x16B3748, 750),
		encInsert(16390, text("42"), text("ada@example.com")),
		encCommit(0x16B3748, 0x16B3778),
	} {
		tx, err := d.Decode(m)
		if err != nil {
			log.Fatal(err)
		}
		if tx != nil {
			fmt.Printf("xid %d, end %s: %s %s %q\n", tx.XID, tx.EndLSN, tx.Changes[0].Kind, tx.Changes[0].Relation.Name, tx.Changes[0].Key)
		}
	}
	// Output: xid 750, end 0/16B3778: insert users ["42"]
}
