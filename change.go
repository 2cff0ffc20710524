// Changes: what a consumer of Watcher.Changes receives.

package biregister

// Op is the kind of a Change.
type Op string

const (
	// OpPut means a member joined or changed its value.
	OpPut Op = "PUT"
	// OpDelete means a member left.
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
}
