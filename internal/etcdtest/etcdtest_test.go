package etcdtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/biregister/biregister/internal/leakcheck"
)

// TestMain checks that leakcheck.Options also suit goleak.VerifyTestMain.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leakcheck.Options()...)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// clientFor returns a client that talks to the given endpoints only.
func clientFor(t *testing.T, eps ...string) *clientv3.Client {
	t.Helper()
	cli, err := newClient(eps, dialTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func mustPut(t *testing.T, cli *clientv3.Client, key, val string) *clientv3.PutResponse {
	t.Helper()
	resp, err := cli.Put(testContext(t), key, val)
	if err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
	return resp
}

func mustGet(t *testing.T, cli *clientv3.Client, key string) *clientv3.GetResponse {
	t.Helper()
	resp, err := cli.Get(testContext(t), key)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return resp
}

func wantValue(t *testing.T, resp *clientv3.GetResponse, val string) {
	t.Helper()
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != val {
		t.Fatalf("got %v, want one key with value %q", resp.Kvs, val)
	}
}

func TestSingleMember(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := Start(t, 1)
	if got := c.Endpoints(); len(got) != 1 || got[0] != c.Endpoint(0) {
		t.Fatalf("Endpoints() = %v, Endpoint(0) = %q", got, c.Endpoint(0))
	}
	cli := c.Client(t)

	put := mustPut(t, cli, "k", "v")
	wantValue(t, mustGet(t, cli, "k"), "v")

	c.Stop(t, 0)
	c.Stop(t, 0) // a no-op
	c.Restart(t, 0)

	// The client of before the stop reconnects by itself.
	get := mustGet(t, cli, "k")
	wantValue(t, get, "v")
	if get.Header.Revision != put.Header.Revision {
		t.Errorf("revision after restart = %d, want %d", get.Header.Revision, put.Header.Revision)
	}
	if get.Header.ClusterId != put.Header.ClusterId {
		t.Errorf("cluster id changed on restart: %x -> %x", put.Header.ClusterId, get.Header.ClusterId)
	}
}

func TestWipe(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := Start(t, 1)
	cli := c.Client(t)
	for range 10 {
		mustPut(t, cli, "k", "v")
	}
	before := mustGet(t, cli, "k")
	wantValue(t, before, "v")

	ep := c.Endpoint(0)
	c.Wipe(t)
	if c.Endpoint(0) != ep {
		t.Fatalf("endpoint changed from %q to %q", ep, c.Endpoint(0))
	}

	after := mustGet(t, cli, "k")
	if len(after.Kvs) != 0 {
		t.Errorf("key survived the wipe: %v", after.Kvs)
	}
	if after.Header.Revision >= before.Header.Revision || after.Header.Revision > 1 {
		t.Errorf("revision after wipe = %d, before = %d", after.Header.Revision, before.Header.Revision)
	}
	if after.Header.ClusterId == before.Header.ClusterId {
		t.Errorf("cluster id %x unchanged by wipe", after.Header.ClusterId)
	}

	// The wiped cluster is a working cluster, and can be restarted too.
	mustPut(t, cli, "k", "w")
	c.Stop(t, 0)
	c.Restart(t, 0)
	wantValue(t, mustGet(t, cli, "k"), "w")
}

func TestThreeMembers(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := Start(t, 3)
	if n := len(c.Endpoints()); n != 3 {
		t.Fatalf("%d endpoints, want 3", n)
	}
	cli := c.Client(t)
	members, err := cli.MemberList(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(members.Members); n != 3 {
		t.Fatalf("%d members, want 3", n)
	}

	mustPut(t, clientFor(t, c.Endpoint(0)), "a", "1")

	c.Stop(t, 0)
	rest := clientFor(t, c.Endpoint(1), c.Endpoint(2))
	mustPut(t, rest, "b", "2")
	wantValue(t, mustGet(t, rest, "a"), "1")

	c.Restart(t, 0)
	only0 := clientFor(t, c.Endpoint(0))
	wantValue(t, mustGet(t, only0, "a"), "1")
	wantValue(t, mustGet(t, only0, "b"), "2")

	// The client for all endpoints keeps working through all of it.
	mustPut(t, cli, "c", "3")
}
