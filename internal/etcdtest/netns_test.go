package etcdtest

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A member cut off from its peers loses its leader and misses what the
// others write, yet still answers its clients; healed, it catches up. A
// member cut off from the test keeps its peers.
func TestIsolated(t *testing.T) {
	c := StartIsolated(t, 3)
	for i, ep := range c.Endpoints() {
		if !strings.HasPrefix(ep, "http://"+subnetPrefix) {
			t.Fatalf("endpoint %d is %s, want an address in %s0.0/16", i, ep, subnetPrefix)
		}
	}
	cut := clientFor(t, c.Endpoint(0))
	majority := clientFor(t, c.Endpoint(1), c.Endpoint(2))

	c.IsolateFromPeers(t, 0)
	// If member 0 led, the others elect a leader first.
	waitUntil(t, "the majority to take a write", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := majority.Put(ctx, "k", "after the cut")
		return err == nil
	})
	waitUntil(t, "member 0 to lose its leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := cut.Status(ctx, c.Endpoint(0))
		return err == nil && resp.Leader == 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	resp, err := cut.Get(ctx, "k", clientv3.WithSerializable())
	cancel()
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("cut-off member answered %v, %v; want nothing, without error", resp, err)
	}

	c.HealPeers(t, 0)
	waitUntil(t, "member 0 to catch up", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := cut.Get(ctx, "k")
		return err == nil && len(resp.Kvs) == 1
	})

	c.CutClient(t, 1)
	one := clientFor(t, c.Endpoint(1))
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	_, err = one.Get(ctx, "k")
	cancel()
	if err == nil {
		t.Fatal("member 1 answered across a cut")
	}
	mustPut(t, cut, "k", "while 1 is cut from the test")
	c.HealClient(t, 1)
	waitUntil(t, "member 1 to answer again", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := one.Get(ctx, "k")
		return err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == "while 1 is cut from the test"
	})
}

// waitUntil polls cond until it holds, failing t after readyTimeout.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
