package cdc

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SlotHealth is a replication slot as the server reports it, for monitoring: what it
// holds back and whether anyone streams it. It is read with ReadSlot, by any process
// that can connect (a standby worker, a status command), not only by the one
// streaming.
type SlotHealth struct {
	// Exists is false when the server has no slot of that name; the other fields are
	// then zero.
	Exists bool
	// Active reports that a process streams the slot now.
	Active bool
	// WALStatus is pg_replication_slots.wal_status: "reserved", "extended",
	// "unreserved" (the server may soon remove WAL the slot needs) or "lost" (it did:
	// the slot cannot stream again, and a new one means a gap).
	WALStatus string
	// RetainedBytes is how much WAL the slot keeps on the server's disk: from its
	// restart_lsn to the current WAL position. It grows while nobody streams.
	RetainedBytes int64
	// ConfirmedLagBytes is how far the confirmed position trails the current WAL
	// position: changes not yet handled (their keys not yet deleted).
	ConfirmedLagBytes int64
	// SafeWALSizeBytes is pg_replication_slots.safe_wal_size: how much more WAL can be
	// written before the slot is in danger of "lost", or -1 when
	// max_slot_wal_keep_size is unlimited.
	SafeWALSizeBytes int64
}

// ReadSlot reads the health of the logical replication slot named slot through conn,
// a normal (not a replication) connection the caller owns.
func ReadSlot(ctx context.Context, conn *pgx.Conn, slot string) (SlotHealth, error) {
	var h SlotHealth
	var status *string
	var retained, lag, safe *int64
	err := conn.QueryRow(ctx, `
		SELECT active, wal_status,
		       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8,
		       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8,
		       safe_wal_size
		FROM pg_replication_slots WHERE slot_name = $1`, slot).
		Scan(&h.Active, &status, &retained, &lag, &safe)
	if errors.Is(err, pgx.ErrNoRows) {
		return SlotHealth{}, nil
	}
	if err != nil {
		return SlotHealth{}, classify(fmt.Sprintf("read replication slot %s", slot), err)
	}
	h.Exists = true
	if status != nil {
		h.WALStatus = *status
	}
	if retained != nil {
		h.RetainedBytes = *retained
	}
	if lag != nil {
		h.ConfirmedLagBytes = *lag
	}
	h.SafeWALSizeBytes = -1
	if safe != nil {
		h.SafeWALSizeBytes = *safe
	}
	return h, nil
}
