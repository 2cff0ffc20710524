package biregister

import (
	"context"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/leakcheck"
)

// While a Register has no registration, its fence must not hold, even though
// its key is absent.
func TestFenceWhileUnregistered(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	cli := etcdtest.Start(t, 1).Client(t)
	r := &register{key: "/fence/absent"}
	resp, err := cli.Txn(context.Background()).If(r.Fence()).Then(clientv3.OpPut("/fence/data", "x")).Commit()
	if err != nil {
		t.Fatal(err)
	}
	if resp.Succeeded {
		t.Fatal("the fence of an unregistered Register held")
	}
}
