package writepolicy

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors returned by the package.
var (
	// ErrConfig reports options that cannot work; the message says which and why.
	ErrConfig = errors.New("writepolicy: bad configuration")
	// ErrBadChange reports a journal entry that cannot be decoded or applied as
	// written; such an entry goes to the dead-letter stream.
	ErrBadChange = errors.New("writepolicy: bad change")
)

// Policy says what a write through the library does to the cache. The zero value is
// Invalidate.
type Policy uint8

const (
	// Invalidate writes to Postgres and, after the commit, deletes the row's cache
	// entry (and voids fills in progress); the next read loads the row. The default.
	Invalidate Policy = iota
	// WriteThrough writes to Postgres and, after the commit, deletes the row's entry
	// and fills it again from Postgres under a lease (a fenced fill), so the next read
	// is a hit. It never stores the value the caller passed: see the package doc.
	WriteThrough
	// WriteBack writes to Redis only: the write is journaled and becomes the row's
	// pending record and cached value in one atomic step, and a Flusher applies it to
	// Postgres later, in batches. Save returns once the write is in Redis.
	WriteBack
)

var policyNames = [...]string{Invalidate: "invalidate", WriteThrough: "write-through", WriteBack: "write-back"}

// String returns the policy's name: "invalidate", "write-through" or "write-back".
func (p Policy) String() string {
	if int(p) < len(policyNames) {
		return policyNames[p]
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// ParsePolicy returns the policy named s, as String prints it (case-insensitive;
// "writethrough", "write_through" and the like are accepted too).
func ParsePolicy(s string) (Policy, error) {
	norm := strings.NewReplacer("-", "", "_", "", " ", "").Replace(strings.ToLower(s))
	for p, name := range policyNames {
		if strings.ReplaceAll(name, "-", "") == norm {
			return Policy(p), nil
		}
	}
	return 0, fmt.Errorf("%w: unknown write policy %q: use invalidate, write-through or write-back", ErrConfig, s)
}

// Valid reports whether p is one of the defined policies.
func (p Policy) Valid() bool { return int(p) < len(policyNames) }

// WriteBackOptions configure how a write-back Save is made durable. The zero value
// acknowledges a write once Redis has executed it; how durable that is depends on the
// server's persistence settings (see the package doc).
type WriteBackOptions struct {
	// WaitAOF makes Save wait, after the write, until Redis has fsynced it to its
	// append-only file (WAITAOF, Redis 7.2 and later), so that an acknowledged write
	// survives a crash of Redis even with appendfsync everysec. Under everysec that
	// wait is up to a second (the next fsync); under appendfsync always it is nothing.
	// On a server without WAITAOF it is skipped, and a warning is logged once. With
	// appendonly off the wait fails and so does Save.
	WaitAOF bool
	// WaitAOFReplicas is how many replicas must also have fsynced the write (WAITAOF's
	// numreplicas); it implies WaitAOF. Default 0.
	WaitAOFReplicas int
	// WaitAOFTimeout bounds the wait. Default 2s, over appendfsync everysec's second.
	// When it passes Save returns an error;
	// the write may still be applied (it is in Redis' memory and journal).
	WaitAOFTimeout time.Duration
	// Timeout bounds the round trip of a write to Redis. Default 1s: longer than the
	// read timeout (readthrough's RedisTimeout, 100ms), because a read that times out
	// falls back to Postgres, while a write-back write that times out fails.
	Timeout time.Duration
}

// WithDefaults returns o with defaults applied, or an error saying what is wrong.
func (o WriteBackOptions) WithDefaults() (WriteBackOptions, error) {
	if o.WaitAOFReplicas > 0 {
		o.WaitAOF = true
	}
	if o.WaitAOFTimeout == 0 {
		o.WaitAOFTimeout = 2 * time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	switch {
	case o.WaitAOFReplicas < 0:
		return o, fmt.Errorf("%w: WaitAOFReplicas %d is negative", ErrConfig, o.WaitAOFReplicas)
	case o.Timeout < 0:
		return o, fmt.Errorf("%w: Timeout %v is negative", ErrConfig, o.Timeout)
	case o.WaitAOFTimeout < time.Millisecond:
		return o, fmt.Errorf("%w: WaitAOFTimeout %v must be at least 1ms (WAITAOF with timeout 0 blocks forever)", ErrConfig, o.WaitAOFTimeout)
	}
	return o, nil
}
