package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/biregister/biregister/grpcresolver"
	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/exampletest"
	"github.com/biregister/biregister/internal/leakcheck"
	"github.com/biregister/biregister/internal/syncbuf"
)

// TestRun plays the whole story, which fails if a step does not happen as
// told or a call fails, then stops the program as SIGINT does: every
// server closes its Register and stops gracefully.
func TestRun(t *testing.T) {
	exampletest.Run(t, run, nil,
		[]string{
			"s2 closed its Register, then stopped gracefully", "while s2 left, none failed",
			"answered by s1=", "done: no call failed", "serve until SIGTERM or SIGINT",
		},
		[]string{
			"s1 closed its Register, then stopped gracefully",
			"s3 closed its Register, then stopped gracefully",
			"s4 closed its Register, then stopped gracefully",
		})
}

// TestStopCutsAfterGrace checks that a server whose stream outlives the
// grace period stops all the same, with Stop, and that the stream's client
// is told to go elsewhere.
func TestStopCutsAfterGrace(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := etcdtest.Start(t, 1)
	out := new(syncbuf.Buffer)
	const grace = 100 * time.Millisecond
	d := &demo{ctx: context.Background(), out: out, endpoints: c.Endpoints(), prefix: "/grace/", grace: grace, servers: map[string]*server{}}
	d.start("s1", "a")
	require.NoError(t, d.err)
	t.Cleanup(d.stopAll)
	ep, err := grpcresolver.ParseEndpoint(d.servers["s1"].reg.GetValueByName("s1"))
	require.NoError(t, err)

	// A health Watch ends only when its client or server does.
	conn, err := grpc.NewClient(ep.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	require.NoError(t, err, "the first status, once the stream is open")

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		d.stop("s1")
	}()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatalf("the server did not stop within 30 s with a grace period of %v", grace)
	}
	assert.Contains(t, out.String(), "s1 closed its Register, then stopped with Stop once the 100ms grace period was over")
	_, err = stream.Recv()
	assert.Equal(t, codes.Unavailable, status.Code(err), "the stream's end: %v", err)
}
