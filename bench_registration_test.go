// Benchmark 3, registration: how long NewRegister takes, with a shared or an
// own client and into a group of 1,000, against concurrency.NewSession +
// Campaign (BenchmarkRegistration).

package biregister_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
)

func BenchmarkRegistration(b *testing.B) {
	eps := startBenchEtcd(b)
	shared := benchClient(b, eps)
	writer := benchClient(b, eps)

	register := func(b *testing.B, prefix string, opts ...biregister.Option) {
		timeJoins(b, func(i int) leaver {
			r, err := biregister.NewRegister(eps, prefix, fmt.Sprintf("new%06d", i), "10.0.0.1:8080", benchTTL, opts...)
			if err != nil {
				b.Fatal(err)
			}
			return r
		})
	}
	b.Run("biregister-NewRegister-shared-client", func(b *testing.B) {
		register(b, uniquePrefix("registration/shared"), biregister.WithClient(shared))
	})
	b.Run("biregister-NewRegister-own-client", func(b *testing.B) {
		register(b, uniquePrefix("registration/own"))
	})
	// Joining a group that already has 1,000 members: NewRegister lists them.
	b.Run("biregister-NewRegister-shared-client-into-1000", func(b *testing.B) {
		prefix := uniquePrefix("registration/big")
		ctx, cancel := ctxWait()
		defer cancel()
		keys := make([]string, 1000)
		for i := range keys {
			keys[i] = fmt.Sprintf("%sm%06d", prefix, i)
		}
		if err := benchutil.Populate(ctx, writer, keys, func(i int) string { return endpointAddr(i) }, 128, 4); err != nil {
			b.Fatal(err)
		}
		register(b, prefix, biregister.WithClient(shared))
	})
	b.Run("concurrency-NewSession+Campaign", func(b *testing.B) {
		prefix := uniquePrefix("registration/election")
		ctx, cancel := context.WithCancel(context.Background()) // the loop may outlast benchWait
		defer cancel()
		timeJoins(b, func(int) leaver {
			s, err := concurrency.NewSession(shared, concurrency.WithTTL(benchTTL))
			if err != nil {
				b.Fatal(err)
			}
			if err := concurrency.NewElection(s, prefix).Campaign(ctx, "10.0.0.1:8080"); err != nil {
				b.Fatal(err)
			}
			return (*campaigner)(s)
		})
	})
}

// leaver is what joined a group: Close leaves it.
type leaver interface{ Close() }

// campaigner is a Session that campaigned; Close closes the Session. (A
// pointer converts to an interface without allocating, so the timed loop
// allocates what NewSession and Campaign do and nothing else.)
type campaigner concurrency.Session

func (c *campaigner) Close() { (*concurrency.Session)(c).Close() }

// timeJoins times b.N calls of join, each joining the group as member i, and
// reports their latencies; the timer stops while the member leaves.
func timeJoins(b *testing.B, join func(i int) leaver) {
	var lat benchutil.Latencies
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		m := join(i)
		lat.Add(time.Since(start))
		b.StopTimer()
		m.Close()
		b.StartTimer()
	}
	b.StopTimer()
	lat.Report(b, "")
}
