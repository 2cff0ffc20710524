// Benchmark 13, a delete's propagation: how long a member deleted from
// outside takes to come out of a raw clientv3.Watch and of a Watcher's
// Changes, with mass-loss protection (the default) and without it
// (BenchmarkDeletePropagation).

package biregister_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
)

// deletePeer awaits the DELETE of a member of its group.
type deletePeer struct {
	prefix string
	await  func(name string) error
}

// newRawDeletePeer watches prefix with a raw watch.
func newRawDeletePeer(b *testing.B, c *clientv3.Client, prefix string) *deletePeer {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	wch := c.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if resp := <-wch; !resp.Created {
		b.Fatalf("raw watch not created: %v", resp.Err())
	}
	return &deletePeer{prefix: prefix, await: func(name string) error {
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete && string(ev.Kv.Key) == prefix+name {
					return nil
				}
			}
		}
		return errors.New("raw watch closed")
	}}
}

// newWatcherDeletePeer follows prefix with a Watcher made with opts.
func newWatcherDeletePeer(b *testing.B, c *clientv3.Client, prefix string, opts ...biregister.Option) *deletePeer {
	w, err := biregister.NewWatcher(nil, prefix, benchTTL, append(opts, biregister.WithClient(c))...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.Close)
	changes := w.Changes()
	return &deletePeer{prefix: prefix, await: func(name string) error {
		for ch := range changes {
			if ch.Op == biregister.OpResync || (ch.Op == biregister.OpDelete && ch.Name == name) {
				return nil
			}
		}
		return errors.New("Changes closed")
	}}
}

// BenchmarkDeletePropagation times a delete from outside (a loss, the kind
// protection weighs) from just before the Delete to its receipt, the three
// peers taking turns, each on a group of its own of propKeys members. The
// member is put back, untimed, before the next turn: under protection the
// Watcher's window fills with losses, and it holds them, as in a mass loss.
func BenchmarkDeletePropagation(b *testing.B) {
	eps := startBenchEtcd(b)
	writer := benchClient(b, eps)
	names := []string{"raw-watch", "biregister-protected", "biregister-unprotected"}
	var peers [3]*deletePeer
	for j, name := range names {
		prefix := uniquePrefix("deletes/" + name)
		for i := range propKeys {
			if _, err := writer.Put(context.Background(), fmt.Sprintf("%sm%d", prefix, i), "v"); err != nil {
				b.Fatal(err)
			}
		}
		c := benchClient(b, eps)
		switch j {
		case 0:
			peers[j] = newRawDeletePeer(b, c, prefix)
		case 1:
			peers[j] = newWatcherDeletePeer(b, c, prefix)
		default:
			peers[j] = newWatcherDeletePeer(b, c, prefix, biregister.WithoutProtection())
		}
	}
	settle(b, eps, nil)
	var lat [3]benchutil.Latencies
	b.ResetTimer()
	for i := range b.N {
		j := i % 3
		p := peers[j]
		name := fmt.Sprintf("m%d", (i/3)%propKeys)
		ctx, cancel := ctxWait()
		start := time.Now()
		if _, err := writer.Delete(ctx, p.prefix+name); err != nil {
			b.Fatal(err)
		}
		if err := p.await(name); err != nil {
			b.Fatal(err)
		}
		lat[j].Add(time.Since(start))
		b.StopTimer()
		if _, err := writer.Put(ctx, p.prefix+name, "v"); err != nil {
			b.Fatal(err)
		}
		cancel()
		b.StartTimer()
	}
	b.StopTimer()
	raw := lat[0].Quantile(0.5)
	for j, name := range names {
		lat[j].Report(b, name)
		if j > 0 && raw > 0 {
			b.ReportMetric(float64(lat[j].Quantile(0.5))/float64(raw), name+"/raw-p50-x")
		}
	}
}
