// Benchmark 1, propagation: how long a Put takes to come out of a raw
// clientv3.Watch, of a biregister Watcher's Changes and of naming/endpoints'
// watch channel (BenchmarkPropagation).

package biregister_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
)

// endpointJSON is an endpoint as naming/endpoints stores it, so that all three
// peers can read the very same writes.
func endpointJSON(addr string) string {
	return `{"Op":0,"Addr":"` + addr + `","Metadata":null}`
}

// propKeys is how many members the propagation group has; the writes cycle
// over them.
const propKeys = 8

// propWrite is one write of a propagation benchmark.
type propWrite struct{ key, value, addr string }

// propPeer receives the writes under prefix; await returns once the write has
// come out of it.
type propPeer struct {
	prefix string
	await  func(w propWrite) error
	close  func()
}

func newRawWatchPeer(c *clientv3.Client, prefix string) (*propPeer, error) {
	ctx, cancel := context.WithCancel(context.Background())
	wch := c.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if resp := <-wch; !resp.Created {
		cancel()
		return nil, fmt.Errorf("raw watch not created: %v", resp.Err())
	}
	return &propPeer{
		prefix: prefix,
		close:  cancel,
		await: func(w propWrite) error {
			for resp := range wch {
				for _, ev := range resp.Events {
					if string(ev.Kv.Key) == w.key && string(ev.Kv.Value) == w.value {
						return nil
					}
				}
			}
			return errors.New("raw watch closed")
		},
	}, nil
}

func newBiregisterPeer(c *clientv3.Client, prefix string) (*propPeer, error) {
	w, err := biregister.NewWatcher(nil, prefix, benchTTL, biregister.WithClient(c))
	if err != nil {
		return nil, err
	}
	changes := w.Changes()
	return &propPeer{
		prefix: prefix,
		close:  w.Close,
		await: func(wr propWrite) error {
			name := strings.TrimPrefix(wr.key, prefix)
			for ch := range changes {
				if ch.Op == biregister.OpResync || (ch.Op == biregister.OpPut && ch.Name == name && ch.Value == wr.value) {
					// The change is out; the cache must show it too.
					for w.GetValueByName(name) != wr.value {
						runtime.Gosched()
					}
					return nil
				}
			}
			return errors.New("Changes closed")
		},
	}, nil
}

func newEndpointsPeer(c *clientv3.Client, prefix string) (*propPeer, error) {
	m, err := endpoints.NewManager(c, strings.TrimSuffix(prefix, "/"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	wch, err := m.NewWatchChannel(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	// The group is not empty: the initial list comes first.
	select {
	case <-wch:
	case <-time.After(benchWait):
		cancel()
		return nil, errors.New("no initial endpoint list")
	}
	return &propPeer{
		prefix: prefix,
		close:  cancel,
		await: func(w propWrite) error {
			for ups := range wch {
				for _, u := range ups {
					if u.Op == endpoints.Add && u.Key == w.key && u.Endpoint.Addr == w.addr {
						return nil
					}
				}
			}
			return errors.New("endpoints watch channel closed")
		},
	}, nil
}

type peerMaker func(c *clientv3.Client, prefix string) (*propPeer, error)

// setUpPropPeer fills a new group with propKeys members, starts a peer on it
// with a client of its own, and warms it up until its watch is synced.
func setUpPropPeer(b *testing.B, eps []string, writer *clientv3.Client, what string, mk peerMaker) (*propPeer, func(i int) propWrite) {
	b.Helper()
	prefix := uniquePrefix("propagation/" + what)
	ctx, cancel := ctxWait()
	defer cancel()
	write := func(i int) propWrite {
		addr := endpointAddr(i)
		return propWrite{key: fmt.Sprintf("%sm%d", prefix, i%propKeys), value: endpointJSON(addr), addr: addr}
	}
	for i := 0; i < propKeys; i++ {
		w := write(i)
		if _, err := writer.Put(ctx, w.key, w.value); err != nil {
			b.Fatal(err)
		}
	}
	peer, err := mk(benchClient(b, eps), prefix)
	if err != nil {
		b.Fatalf("%s: %v", what, err)
	}
	b.Cleanup(peer.close)
	// Warm up: the first writes may reach a watch that is still catching up.
	for i := propKeys; i < propKeys+30; i++ {
		w := write(i)
		if _, err := writer.Put(ctx, w.key, w.value); err != nil {
			b.Fatal(err)
		}
		if err := peer.await(w); err != nil {
			b.Fatal(err)
		}
	}
	settle(b, eps, nil)
	return peer, func(i int) propWrite { return write(i + propKeys + 30) }
}

// propagate times one write: from just before the Put to its receipt.
func propagate(b *testing.B, writer *clientv3.Client, peer *propPeer, w propWrite) time.Duration {
	ctx, cancel := ctxWait()
	defer cancel()
	start := time.Now()
	if _, err := writer.Put(ctx, w.key, w.value); err != nil {
		b.Fatal(err)
	}
	if err := peer.await(w); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

func BenchmarkPropagation(b *testing.B) {
	eps := startBenchEtcd(b)
	writer := benchClient(b, eps)
	peers := []struct {
		name string
		mk   peerMaker
	}{
		{"raw-watch", newRawWatchPeer},
		{"biregister", newBiregisterPeer},
		{"endpoints", newEndpointsPeer},
	}
	for _, p := range peers {
		b.Run(p.name, func(b *testing.B) {
			peer, write := setUpPropPeer(b, eps, writer, p.name, p.mk)
			var lat benchutil.Latencies
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				lat.Add(propagate(b, writer, peer, write(i)))
			}
			b.StopTimer()
			lat.Report(b, "")
		})
	}
	// The three peers live side by side and take turns, write by write, so
	// that whatever else the machine does falls on all of them alike; the
	// ratios to the raw watch come from the same seconds.
	b.Run("interleaved", func(b *testing.B) {
		var live [3]*propPeer
		var writes [3]func(int) propWrite
		for j, p := range peers {
			live[j], writes[j] = setUpPropPeer(b, eps, writer, p.name, p.mk)
		}
		var lat [3]benchutil.Latencies
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			j := i % 3
			lat[j].Add(propagate(b, writer, live[j], writes[j](i/3)))
		}
		b.StopTimer()
		raw := lat[0].Quantile(0.5)
		for j, p := range peers {
			lat[j].Report(b, p.name)
			if j > 0 && raw > 0 {
				b.ReportMetric(float64(lat[j].Quantile(0.5))/float64(raw), p.name+"/raw-p50-x")
			}
		}
	})
}
