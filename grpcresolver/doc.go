// Package grpcresolver lets gRPC clients find the members of a biregister
// group by themselves: a [resolver.Builder] for the "biregister" scheme that
// resolves a target to every member of a [biregister.Watcher]'s group and
// follows the group live, so that gRPC's own balancers (round_robin, …)
// spread calls over the servers registered right now.
//
// A server registers the address clients should dial:
//
//	reg, err := biregister.NewRegister(etcd, "/services/api/", "api-1",
//		grpcresolver.Endpoint{Addr: "10.0.0.1:8080"}.String(), 10)
//	…
//	defer reg.Close() // revokes the lease: clients stop calling at once
//
// A client dials the group through a Watcher of it:
//
//	w, err := biregister.NewWatcher(etcd, "/services/api/", 10)
//	…
//	defer w.Close()
//	conn, err := grpc.NewClient("biregister:///services/api",
//		grpc.WithResolvers(grpcresolver.NewBuilder(w)),
//		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
//		grpc.WithTransportCredentials(insecure.NewCredentials()))
//
// # Targets
//
// A Builder resolves one group, its Watcher's; the target's path names that
// group for the reader and is gRPC's default :authority. An empty path
// ("biregister:///") always means the Watcher's group. Build rejects a path
// that names another group than Watcher.Prefix, leading and trailing slashes
// aside, so that a client wired to the wrong Watcher fails at once instead of
// calling the wrong servers. Since gRPC checks TLS certificates against the authority,
// a client using TLS names the servers' certificate with grpc.WithAuthority
// or with its tls.Config's ServerName.
//
// # Values
//
// A member's value is either a plain address or a JSON object with the
// address and string metadata (see [Endpoint]):
//
//	10.0.0.1:8080
//	{"addr":"10.0.0.1:8080","metadata":{"zone":"a"}}
//
// Metadata is attached to the resolved [resolver.Endpoint], where a
// load-balancing policy reads it with [Metadata]. A value that is neither
// form is skipped, and logged through the [WithLogger] logger; it never
// affects the other members. Two members with the same address count once.
//
// # Outages and empty groups
//
// The Watcher's cache keeps the last members it knew while etcd is
// unreachable or while it lists the group again, so the resolver keeps
// serving the last addresses: an outage of the registry never becomes an
// outage of its clients, and once etcd is back, the resolver follows the
// changes made since.
//
// When the group becomes empty (or no member has a usable value), the
// resolver does not hand gRPC an empty list. It reports an error instead,
// which gRPC's balancers ignore while they hold a previous list, so clients
// keep calling the last known servers. An empty group is more often the
// registry's view failing than the servers: every lease lapsing while the
// servers were cut off from etcd, or an etcd replaced without its data
// before the members register again. When the servers really are gone,
// calls to their addresses fail anyway, and the first member to register
// again is followed at once. A client that never saw a member fails its
// calls with the reported error (or waits for one, with
// grpc.WaitForReady).
//
// When the Watcher closes, the resolver reports an error and stops
// following it; the client keeps its last addresses. Close the Watcher
// after the clients that use it.
package grpcresolver
