// TestMain: the one etcd, started in this process, that the examples of this
// package run against (etcdEndpoints).

package biregister_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/biregister/biregister/internal/devetcd"
)

// etcdEndpoints are those of the etcd the examples run against; TestMain
// starts one in this process. In a real program they are your cluster's,
// e.g. []string{"10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"}.
var etcdEndpoints []string

func TestMain(m *testing.M) {
	srv, err := devetcd.Start("")
	if err != nil {
		fmt.Fprintln(os.Stderr, "start etcd for the examples:", err)
		os.Exit(1)
	}
	etcdEndpoints = srv.Endpoints()
	code := m.Run()
	srv.Close()
	os.Exit(code)
}
