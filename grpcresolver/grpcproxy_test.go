// The resolver through etcd's gRPC proxy: servers and clients that reach etcd
// only through it.

package grpcresolver_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/grpcresolver"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
)

// TestGRPCProxy checks that a client follows servers joining and leaving
// when the servers and the client's Watcher reach etcd only through etcd's
// gRPC proxy, whose shared watches and lease renewals then carry the group.
func TestGRPCProxy(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := etcdtest.Start(t, 1)
	eps := []string{c.StartGRPCProxy(t).Endpoint()}
	registerVia := func(name, value string) biregister.Register {
		t.Helper()
		r, err := biregister.NewRegister(eps, group, name, value, ttl)
		require.NoError(t, err)
		t.Cleanup(r.Close)
		return r
	}

	servers := []*server{startServer(t), startServer(t)}
	regs := make([]biregister.Register, len(servers))
	for i, s := range servers {
		regs[i] = registerVia(fmt.Sprintf("s%d", i), s.addr)
	}
	w, err := biregister.NewWatcher(eps, group, ttl)
	require.NoError(t, err)
	t.Cleanup(w.Close)
	conn, err := grpc.NewClient("biregister:///services/api",
		grpc.WithResolvers(grpcresolver.NewBuilder(w)),
		grpc.WithDefaultServiceConfig(roundRobin),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	cl := &client{t: t, hc: healthpb.NewHealthClient(conn)}
	cl.callUntil("every server got a call", allCalled(servers...))

	joining := startServer(t)
	registerVia("s2", joining.addr)
	cl.callUntil("the server that joined gets calls", allCalled(joining))

	// A server leaves once the others alone got a good many calls in a row.
	leaving, staying := servers[0], []*server{servers[1], joining}
	regs[0].Close()
	last, othersAtLast := leaving.calls.Load(), sum(counts(staying))
	cl.callUntil("the server that left gets no more calls", func() bool {
		if n := leaving.calls.Load(); n != last {
			last, othersAtLast = n, sum(counts(staying))
			return false
		}
		return sum(counts(staying))-othersAtLast >= 100
	})
	got := cl.shares(100, staying...)
	assert.Equal(t, int64(100), sum(got), "a call went to the server that left")
	assert.Equal(t, last, leaving.calls.Load())
}
