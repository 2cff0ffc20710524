// Package biregister registers services in etcd v3, keeps a live cache of every
// member of a group, and elects the group's leader.
//
// A group is every key directly under a prefix such as "/services/api/". A
// service joins it with [NewRegister], which puts its key with a lease and keeps
// the lease alive; any process follows it with [NewWatcher], which keeps a local
// copy of the members that reads never wait for. The leader of a group is the
// member with the lowest create revision: the oldest live registration.
//
// Reads ([Watcher.GetAll], [Watcher.GetLeader], [Register.AmILeader], …) are
// served from an immutable snapshot and never touch the network. Every change is
// also delivered on [Watcher.Changes], in etcd revision order; a consumer that
// falls behind gets one [OpResync] change instead of an unbounded backlog.
//
// [Register.AmILeader] is true only while this member's registration is the
// oldest and its lease is certainly alive: the lease deadline counts from when
// the last acknowledged keepalive was sent, so a leader cut off from etcd stops
// leading before etcd can let anyone else lead. [Register.Fence] guards
// leader-only writes for the cases no deadline can cover.
//
// The library heals itself: a Register whose lease or key is lost registers
// again under the same name, and a Watcher whose watch breaks, is compacted or
// finds etcd replaced behind its endpoints lists the group again and turns the
// difference into changes.
//
// A member that leaves on purpose ([Watcher.Close] of its Register,
// [Register.Resign]) says so: every watcher reports its DELETE as
// [Change.Left], apart from a loss (a lease that expired or was revoked, a
// key deleted from outside). When most of a group is lost at once, the
// members lost stay suspects for a bounded time ([Protection],
// [View.Suspects]), which the gRPC resolver keeps serving: their servers may
// well be alive.
//
// A process that holds many registrations, in one group or many, can put them
// on one [Lease] ([WithLease]): one etcd lease and one keepalive stream for
// all of them, each registration still repaired, fenced and led on its own.
//
// Package grpcresolver lets gRPC clients dial every member of a group, and the
// command cmd/biregister shows a group's members and changes to an operator.
package biregister
