// Changes: what a consumer of Watcher.Changes receives.

package biregister

// Op is the kind of a Change.
type Op string

const (
	// OpPut means a member joined or changed its value.
	OpPut Op = "PUT"
	// OpDelete means a member left or was lost: Change.Left tells which.
	OpDelete Op = "DELETE"
	// OpResync means changes were dropped because the consumer fell behind:
	// re-read the whole group (GetAll or Members) instead of applying deltas.
	OpResync Op = "RESYNC"
)

// Change is one change of a group, as delivered on Watcher.Changes.
type Change struct {
	// Name is the member's name; empty for OpResync.
	Name string
	// Op says what happened.
	Op Op
	// Value is the member's new value for OpPut, its last value for OpDelete.
	Value string
	// Revision is the etcd revision of the change. For the members present at
	// start it is the revision the cache was read at; for OpResync, that of
	// the newest change the cache holds when the RESYNC is delivered.
	Revision int64
	// Left reports, for OpDelete, a graceful leave: the member left on
	// purpose (Close, Resign) and said so first. False for a loss: a lease
	// that expired or was revoked, a key deleted from outside, or a leave
	// this Watcher could not tell (made while its watch was down and gone
	// by its listing, or by a version of the library before graceful
	// leaves).
	Left bool
	// Suspect reports, for OpDelete, a loss held as a suspect: the cache
	// no longer holds the member, but a View still yields it among its
	// Suspects, and the gRPC resolver keeps its address, until its name
	// registers again or its hold ends (see Protection).
	Suspect bool
}
