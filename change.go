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
	// start and for OpResync it is the revision the cache was read at.
	Revision int64
}

// feed delivers changes to the user's channel without ever blocking the
// goroutine that owns the cache. When the channel is full it drops changes and
// owes the consumer one OpResync, which the owner sends from its select loop
// (see pending) as soon as there is room.
type feed struct {
	ch        chan Change
	overflown bool
}

func newFeed(size int) *feed {
	return &feed{ch: make(chan Change, size)}
}

// push delivers c, or records that the consumer must resync.
func (f *feed) push(c Change) {
	if f.overflown {
		return
	}
	select {
	case f.ch <- c:
	default:
		f.overflown = true
	}
}

// pending returns the channel to send the owed OpResync on, or nil (a select
// case that never fires) when nothing is owed.
func (f *feed) pending() chan<- Change {
	if f.overflown {
		return f.ch
	}
	return nil
}

// resynced records that the owed OpResync was delivered.
func (f *feed) resynced() { f.overflown = false }
