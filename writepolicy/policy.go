package writepolicy

import (
	"errors"
	"fmt"
	"strings"
)

// ErrConfig reports a policy name ParsePolicy does not know.
var ErrConfig = errors.New("writepolicy: bad configuration")

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
	// pending record and cached value in one atomic step, and a flusher (package
	// writeback) applies it to Postgres later, in batches. Save returns once the
	// write is in Redis.
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
