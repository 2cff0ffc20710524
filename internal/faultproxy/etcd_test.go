package faultproxy_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/biregister/biregister/internal/etcdtest"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/leakcheck"
)

// TestEtcd runs a real etcd client through the proxy.
func TestEtcd(t *testing.T) {
	leakcheck.VerifyNoLeaks(t)
	c := etcdtest.Start(t, 1)
	p := faultproxy.Start(t, c.Endpoint(0))
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{p.Endpoint()},
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })

	put := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err := cli.Put(ctx, "k", "v")
		return err
	}
	// eventuallyPut retries until a Put succeeds: after a fault the client
	// may need a moment, and a reconnect backoff, to recover.
	eventuallyPut := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := put(time.Second)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("put after heal: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	if err := put(10 * time.Second); err != nil {
		t.Fatalf("put: %v", err)
	}
	if p.Conns() == 0 {
		t.Fatal("the client does not go through the proxy")
	}

	p.Stall()
	err = put(500 * time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) && status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("put while stalled: %v, want a deadline error", err)
	}
	p.Heal()
	eventuallyPut()

	p.Cut()
	if err := put(time.Second); err == nil {
		t.Fatal("put while cut succeeded")
	}
	p.Heal()
	eventuallyPut()
}
