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
// On shutdown, Close the Register, then stop the server with GracefulStop:
// no client's call fails (README, Rolling restarts).
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
// form is skipped, and logged once through the [WithLogger] logger; it
// never affects the other members.
//
// Two members with the same address count once, as the older of them: a
// restarted server may be registered twice until its old lease expires.
// When the older one leaves, the younger one's endpoint takes its place.
// Addresses are compared in a normal form, which [ParseEndpoint] returns
// and gRPC dials, so that one server never counts twice for two spellings
// of its address: the port in decimal without leading zeros ("0080" is
// "80"), an IP address as [net/netip] writes it (IPv6 compressed and in
// lower case, "[0:0::1]" is "[::1]"; an IPv4-mapped IPv6 address as the
// IPv4 address, which is what Go dials; a zone as it is, since interface
// names have a case), and any other host, a DNS name, in lower case, ASCII
// letters only (DNS compares no others). A trailing dot is kept: a name
// with one is absolute, and without may be looked up in other domains.
//
// # Cost
//
// The resolvers of one Builder share their work: they follow one Watcher,
// so the first of them to see a new view works out the list for all, from
// what changed since the view before ([biregister.View.Diff]). A view in
// which nothing the resolvers serve changed (a progress notification, a
// key under the prefix that is not a member, a value rewritten as it was)
// costs a comparison and reaches no gRPC client. A change parses only the
// values it changes, and each member's endpoint is built once. Members
// that join after the youngest are appended; any other change copies the
// list once, since gRPC takes a whole list (its Endpoints, and its
// Addresses for load-balancing policies that read no Endpoints, such as
// those built on gRPC's balancer/base), and every client is handed that
// one copy.
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
// # Most of a group lost at once
//
// The resolver serves the Watcher's suspects with its members (View.Suspects):
// members lost without a graceful leave — their lease expired or was
// revoked, their key deleted from outside — that the Watcher holds for a
// while (biregister.Protection). Each loss is held for a moment (Settle),
// and when most of the group is lost within about a ttl, until its name
// registers again, for a bounded time (Hold). A kept address whose server
// is dead costs the clients next to nothing, as its connection fails and
// the balancer skips it; a dropped address whose server is alive costs
// every call it would have served. A member that leaves gracefully (Close,
// Resign) is dropped at once.
//
// When the Watcher closes, the resolver reports an error and stops
// following it; the client keeps its last addresses. Close the Watcher
// after the clients that use it.
//
// A channel that has made no call for a while (gRPC's idle timeout, 30
// minutes by default) closes its resolver, and builds a new one from the
// same Builder when it wakes. A Builder keeps the last non-empty list its
// resolvers served, and a resolver that starts while the group reads empty,
// or once the Watcher closed, gives it to gRPC before it reports the error:
// a client that goes idle keeps calling the servers it knew, as one that
// stays busy does.
package grpcresolver
