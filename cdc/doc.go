// Package cdc reads the changes committed to a set of Postgres tables from a logical
// replication slot (pgoutput, protocol version 1) and hands them, one whole transaction
// at a time and in commit order, to a [Handler]. It is the change side of the cache: it
// knows Postgres, not Redis, and never loses a change.
//
// # What it does
//
// [Stream.Run] connects with replication=database, checks that the server and the role
// can replicate, creates the publication (FOR TABLE the configured tables, never FOR
// ALL TABLES) or adds the tables it lacks, creates the slot if it is missing, and then
// streams. [Decoder] turns the pgoutput messages into [Tx] values carrying, for every
// row change, the values of the table's key columns as Postgres text: the new key of an
// INSERT or UPDATE, the old key of a DELETE, both keys of an UPDATE that changed the
// key, and one [Change] per table for a TRUNCATE. A change also carries the new row's
// column values ([Change.New]) and the old row's where the message has them
// ([Change.Old]: under REPLICA IDENTITY FULL, or the identity's columns when they
// changed), as Postgres text, each marked as a value, NULL, an unchanged TOAST value
// Postgres did not send, or a value not kept (longer than [MaxValueLen]: rows take
// bounded memory). Decoding does no I/O and is tested on bytes; it returns errors,
// never panics, on malformed input.
//
// Run reconnects after connection loss and server restarts, with capped, jittered
// exponential backoff, and resumes from the slot. A second Stream on a slot that is in
// use keeps retrying ([ErrSlotInUse]), at least once a second, and takes the slot over
// when the first one stops: run one as a standby for the other. When the active process
// dies, Postgres frees the slot as soon as it sees the connection closed (at once for a
// process that crashed or was killed; after wal_sender_timeout when its host vanished).
//
// # Visibility
//
// A handler is given committed transactions that are also visible: before it hands a
// batch over, the Stream reads the server's snapshot (pg_current_snapshot(), on a
// normal connection it opens beside the replication one for each session) and waits,
// asking again after 250µs, doubling up to 50ms, until no transaction of the batch is
// running in it. Postgres writes a commit to WAL, where the walsender decodes and
// streams it, before the committing backend leaves the ProcArray (after it waited for
// synchronous standbys, if any): in between, new snapshots still see the transaction
// as running. A cache invalidated in that window could be filled again at once with the
// old row by a reader that took a lease after the invalidation, which nothing would
// fence. The window is milliseconds under load, and a synchronous standby's whole
// confirmation wait on every commit; waiting delays handling by that much instead. It
// costs one query per batch handed over (none for a batch without changes). When the
// query fails the session ends and the transactions are delivered again; they are
// never handed over unwaited. A transaction still invisible after 5s is logged once.
//
// # Backlog
//
// The Stream knows the server's WAL end (read when a session starts, and with every
// snapshot). While it receives transactions that committed well before it (more than
// 1 MB of WAL), it is behind, and nobody waits for those changes sooner than the rest:
// it then reads the connection in large, spaced reads rather than one per message, and
// hands the handler what arrived within 10ms more at once, so that a backlog of small
// transactions costs a read per hundreds of changes and a batch (one snapshot, one
// handler call) per thousands. A stream that keeps up hands each transaction over as
// soon as it arrives.
//
// # Acknowledgement rule
//
// The slot's confirmed position is what Postgres keeps WAL for and where it resumes.
// The Stream reports a position as confirmed (written, flushed and applied alike) only
// when it is
//
//   - the end LSN of a transaction whose Handle call returned nil, or of an earlier
//     one; or
//   - the WAL end of a keepalive received while no transaction was in progress and
//     every transaction received had been handled: nothing below it is owed to the
//     handler, and confirming it keeps an idle database from pinning WAL.
//
// Positions are reported every Options.StatusInterval, at once when the server asks or
// when the position passes a running-transactions record the Stream logged (every
// Options.StandbySnapshotInterval while transactions arrive, so that the slot's
// restart_lsn follows: see that option), and once more when Run stops. Replication starts at 0/0, which makes the server resume
// at the slot's confirmed position. So delivery is at least once: a crash or an error
// re-delivers every transaction after the last confirmed position, and handlers must be
// idempotent. The Stream receives and decodes ahead of the handler, a bounded number of
// transactions at a time, while the handler works on earlier ones (see [Stream.Run]):
// what was received but not handled is never confirmed, and is delivered again after
// an error. A [BatchHandler] takes every transaction waiting in one call. Within a
// transaction of more than 256 changes, which nobody waits for before its commit, the
// receiver reads the socket lazily (1ms after a read that found little), so that a
// read takes many changes rather than each its own system call.
//
// # Gaps
//
// When changes may have been missed, [Handler.Gap] is called before any transaction:
// when the slot is created (the first run, or after someone dropped it), when Postgres
// invalidated it (wal_status lost: it is dropped and created again), when the
// publication had to be created while the slot already existed (the slot is recreated),
// and when tables were added to the publication. Run does not stream until Gap returned
// nil. A process that dies after creating the slot and before Gap returns would find
// the slot on its next run and no sign of the gap; a handler that is also a
// [GapRecorder] closes that window: Run records each gap through it before opening the
// gap and replays the recorded ones at the start of every session. The invalidator's
// handler is one.
//
// # What it needs from Postgres
//
//   - wal_level=logical, which takes a restart to set ([ErrWalLevel] otherwise), and a
//     free entry in max_replication_slots and max_wal_senders for each Stream's slot.
//     While it streams, a Stream also holds a normal connection (two with partitioned
//     tables) within max_connections.
//   - A role with LOGIN and REPLICATION (superuser is not needed; [ErrPermission]
//     otherwise) that owns the tables; it needs the CREATE privilege on the database
//     to create the publication, or ownership of an existing publication to add tables
//     to it. pg_hba.conf must let it connect to the database.
//   - Every table in Options.Tables existing ([ErrTableMissing] otherwise), with a
//     primary key and REPLICA IDENTITY DEFAULT. A table without a replica identity
//     cannot be updated or deleted from once published, and its changes carry no key;
//     under REPLICA IDENTITY FULL every column counts as a key column.
//
// The slot is kept when the Stream stops: a slot that no one streams from holds WAL on
// the server until it is dropped (pg_drop_replication_slot) or Postgres invalidates it
// (max_slot_wal_keep_size).
package cdc
