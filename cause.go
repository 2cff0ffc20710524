// Why a loop acted: why the watch loop listed the group, why the
// registration loop registered again. The loops decide it; logs and
// metrics (the biregister.cause attribute) say it.

package biregister

// cause is why the group was listed or the member registered.
type cause uint8

const (
	causeNone   cause = iota // nothing to act on: the Watcher closed
	causeResume              // no listing: a new watch from the cache's revision, where etcd answers progress requests

	// Why the group was listed (biregister.listings).
	causeStart           // the constructor
	causeWatchFailed     // the watch ended with an error: compaction, a lost leader, a closed stream
	causeWatchNotCreated // etcd did not create the watch in time
	causeStalled         // the stream said nothing, and etcd or the stream itself did not answer a check
	causeEtcdReplaced    // another cluster, or one restored to an older revision

	// Why the member registered again (biregister.registrations); start too.
	causeKeyDeleted  // the key was deleted, or created anew by another member
	causeKeyReplaced // the key was written from outside: another lease or value, or none
	causeLeaseLost   // etcd said the lease is gone
	causeResigned    // Resign
	causeClosed      // Close: registered no more (logs only)

	numCauses
)

// causeNames are what logs and metrics say of each cause.
var causeNames = [numCauses]string{
	causeNone:            "none",
	causeResume:          "resume",
	causeStart:           "start",
	causeWatchFailed:     "watch_failed",
	causeWatchNotCreated: "watch_not_created",
	causeStalled:         "stalled",
	causeEtcdReplaced:    "etcd_replaced",
	causeKeyDeleted:      "key_deleted",
	causeKeyReplaced:     "key_replaced",
	causeLeaseLost:       "lease_lost",
	causeResigned:        "resigned",
	causeClosed:          "closed",
}

func (c cause) String() string { return causeNames[c] }
