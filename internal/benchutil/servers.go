package benchutil

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister/internal/devetcd"
	"github.com/biregister/biregister/internal/etcdtest"
)

// Server is an etcd that a benchmark reads from, reached without a proxy.
type Server struct {
	Name     string // its version, and where it runs
	Endpoint string
	Client   *clientv3.Client
}

// Servers starts an embedded etcd and, if BIREGISTER_ETCD_BIN names one, an
// etcd process of that binary too, so that one run measures both; they
// stop when b ends.
func Servers(b *testing.B) []Server {
	srv, err := devetcd.Start("")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Close)
	servers := []Server{{Name: "embedded", Endpoint: srv.Endpoints()[0]}}
	if os.Getenv("BIREGISTER_ETCD_BIN") != "" {
		servers = append(servers, Server{Name: "process", Endpoint: etcdtest.Start(b, 1).DirectEndpoint(0)})
	}
	for i := range servers {
		c, err := devetcd.NewClient([]string{servers[i].Endpoint}, 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := c.Status(ctx, servers[i].Endpoint)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		servers[i].Name = st.Version + "-" + servers[i].Name
		servers[i].Client = c
	}
	return servers
}

// FillGroup puts n members m0000000 … under prefix, with 13-byte values, in
// transactions of 128 puts, and returns their keys. Members that share a
// create revision cost a listing nothing more.
func FillGroup(b *testing.B, c *clientv3.Client, prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%sm%07d", prefix, i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if err := Populate(ctx, c, keys, func(i int) string { return fmt.Sprintf("v%012d", i) }, 128, 16); err != nil {
		b.Fatal(err)
	}
	return keys
}
