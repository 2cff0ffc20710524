package grpcresolver_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/grpcresolver"
	"github.com/biregister/biregister/internal/devetcd"
)

// etcdEndpoints are those of the etcd the example runs against; TestMain
// starts one in this process. In a real program they are your cluster's.
var etcdEndpoints []string

func TestMain(m *testing.M) {
	srv, err := devetcd.Start("")
	if err != nil {
		fmt.Fprintln(os.Stderr, "start etcd for the example:", err)
		os.Exit(1)
	}
	etcdEndpoints = srv.Endpoints()
	code := m.Run()
	srv.Close()
	os.Exit(code)
}

func ExampleNewBuilder() {
	// A server registers its address in the group.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	server := grpc.NewServer()
	healthpb.RegisterHealthServer(server, health.NewServer())
	go server.Serve(lis)
	defer server.Stop()
	reg, err := biregister.NewRegister(etcdEndpoints, "/example/grpc/", "server-1", lis.Addr().String(), 5)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()

	// A client dials every member of the group, round robin.
	w, err := biregister.NewWatcher(etcdEndpoints, "/example/grpc/", 5)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Close()
	conn, err := grpc.NewClient("biregister:///example/grpc",
		grpc.WithResolvers(grpcresolver.NewBuilder(w)),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()

	resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.GetStatus())
	// Output: SERVING
}
