package cdc

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Errors of this package. Errors returned by [NewStream] and [Stream.Run] wrap one of them
// with the step that failed and what to fix.
var (
	// ErrConfig: the options, or the Postgres objects they name (an existing slot or
	// publication), are not usable as they are. Fatal.
	ErrConfig = errors.New("cdc: invalid configuration")
	// ErrWalLevel: the server's wal_level is not logical. Fatal.
	ErrWalLevel = errors.New("cdc: wal_level is not logical")
	// ErrPermission: the role lacks a privilege it needs, named in the message. Fatal.
	ErrPermission = errors.New("cdc: insufficient privilege")
	// ErrTableMissing: a table of Options.Tables does not exist. Fatal.
	ErrTableMissing = errors.New("cdc: table does not exist")
	// ErrSlotInUse: another connection streams from the slot. Not fatal: Run keeps
	// retrying, which is how a standby waits to take over.
	ErrSlotInUse = errors.New("cdc: replication slot is in use")
	// ErrCatalogChanged: the stream met a table it did not know when the session
	// began (a partition attached since), or partitions were attached or detached. Not
	// fatal: Run reads the catalog again and resumes from the last confirmed position.
	ErrCatalogChanged = errors.New("cdc: the published tables changed")
	// ErrProtocol: the server sent a message the decoder cannot accept. Not fatal:
	// Run reconnects and the server sends it again.
	ErrProtocol = errors.New("cdc: malformed or unexpected pgoutput message")
)

// IsFatal reports whether err is one that retrying cannot fix: [ErrConfig],
// [ErrWalLevel], [ErrPermission] or [ErrTableMissing]. Run returns these at once.
func IsFatal(err error) bool {
	return errors.Is(err, ErrConfig) || errors.Is(err, ErrWalLevel) ||
		errors.Is(err, ErrPermission) || errors.Is(err, ErrTableMissing)
}

// SQLSTATE codes this package reacts to.
const (
	codeInsufficientPrivilege = "42501"
	codeInvalidPassword       = "28P01"
	codeInvalidAuthorization  = "28000"
	codeInvalidCatalogName    = "3D000"
	codeObjectInUse           = "55006"
	codeUndefinedObject       = "42704"
)

// classify wraps a server error of step with the sentinel it amounts to. Errors that
// match none are returned wrapped but unclassified (transient).
func classify(step string, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("cdc: %s: %w", step, err)
	}
	switch pgErr.Code {
	case codeInsufficientPrivilege:
		return fmt.Errorf("%w: %s: %w", ErrPermission, step, err)
	case codeInvalidPassword, codeInvalidAuthorization:
		return fmt.Errorf("%w: %s: authentication or pg_hba.conf rejected the connection: %w", ErrPermission, step, err)
	case codeInvalidCatalogName:
		return fmt.Errorf("%w: %s: the connection string names a database that does not exist: %w", ErrConfig, step, err)
	case codeObjectInUse:
		return fmt.Errorf("%w: %s: %w", ErrSlotInUse, step, err)
	}
	return fmt.Errorf("cdc: %s: %w", step, err)
}
