// The sentinel errors, matched with errors.Is.

package biregister

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidArgument is returned for an argument the library cannot use:
	// no endpoints, an empty prefix or name, a name with '/', ttl < 1, …
	ErrInvalidArgument = errors.New("biregister: invalid argument")
	// ErrNameTaken is returned when a live member already holds the name.
	ErrNameTaken = errors.New("biregister: name taken by a live member")
	// ErrClosed is returned by an operation on a closed Watcher or Register,
	// and is the cause of a Term that ended because its Register closed.
	ErrClosed = errors.New("biregister: closed")

	// The causes of a Term's end, as context.Cause reports them.

	// ErrLeaseDeadline means the lease could no longer be known to be alive:
	// etcd acknowledged no keepalive that would keep it alive past now.
	ErrLeaseDeadline = errors.New("biregister: lease deadline passed")
	// ErrRegistrationLost means the registration is gone: its key was
	// deleted or replaced, or its lease was lost or revoked.
	ErrRegistrationLost = errors.New("biregister: registration lost")
	// ErrResigned means the member resigned.
	ErrResigned = errors.New("biregister: resigned")
	// ErrNotLeader means another registration is now the oldest.
	ErrNotLeader = errors.New("biregister: another member leads")
)

// maxQuoted is how many bytes of a key an error message quotes: names and
// values can be megabytes long.
const maxQuoted = 128

// quoteKey quotes key for an error message, cut short if it is long.
func quoteKey(key string) string {
	if len(key) <= maxQuoted {
		return fmt.Sprintf("%q", key)
	}
	return fmt.Sprintf("%q… (%d bytes)", key[:maxQuoted], len(key))
}
