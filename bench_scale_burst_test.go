// Benchmark 5, scale, bursts: how long a burst of 20,000 updates of a big
// group takes to reach a Watcher's cache and Changes, against a raw watch
// (the burst/* sub-benchmarks of BenchmarkScale).

package biregister_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
)

// burstSize is how many updates one burst makes.
const burstSize = 20000

// burstWriters is how many goroutines send a burst.
const burstWriters = 4

// burst is one burst of burstSize updates of a group's members, made by
// burstWriters goroutines in transactions of 128 puts. Writer k owns the
// members whose index is k modulo burstWriters, so the last value of every
// member is known in advance.
type burst struct {
	perWriter [][]clientv3.Op // the puts of each writer, in order
	final     []burstFinal    // the last value of every member updated
}

type burstFinal struct{ name, value string }

var burstGen atomic.Int64

func newBurst(g *scaleGroup) *burst {
	n := len(g.keys)
	gen := int(burstGen.Add(1))
	bu := &burst{perWriter: make([][]clientv3.Op, burstWriters)}
	last := make(map[int]string, min(n, burstSize))
	for u := 0; u < burstSize; u++ {
		k := u % n
		v := scaleValue(k, gen*1000+u/n)
		bu.perWriter[k%burstWriters] = append(bu.perWriter[k%burstWriters], clientv3.OpPut(g.keys[k], v))
		last[k] = v
	}
	for k := 0; k < min(n, burstSize); k++ {
		bu.final = append(bu.final, burstFinal{name: g.names[k], value: last[k]})
	}
	return bu
}

// run sends the burst and returns when the last write was acknowledged.
func (bu *burst) run(c *clientv3.Client) (time.Time, error) {
	ctx, cancel := ctxWait()
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, burstWriters)
	for _, ops := range bu.perWriter {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for len(ops) > 0 {
				chunk := ops[:min(128, len(ops))]
				ops = ops[len(chunk):]
				if _, err := c.Txn(ctx).Then(chunk...).Commit(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return time.Now(), <-errs
}

// currentRevision returns etcd's current revision.
func currentRevision(b *testing.B, c *clientv3.Client) int64 {
	ctx, cancel := ctxWait()
	defer cancel()
	resp, err := c.Get(ctx, "/bench/revision")
	if err != nil {
		b.Fatal(err)
	}
	return resp.Header.Revision
}

// burstSide receives the bursts of one group: a biregister Watcher or a raw
// watch, set up and synced beforehand.
type burstSide struct {
	g *scaleGroup
	// arm starts waiting for the burst bu, whose writes all come after
	// revision after; the channel yields when all of it has been received.
	arm   func(bu *burst, after int64) <-chan burstDone
	close func()
}

type burstDone struct {
	at        time.Time // biregister: the burst's last change out of Changes, the cache updated; raw: every event received
	changesAt time.Time // biregister: the burst's last change out of Changes
	err       error
}

func newBiregisterBurstSide(b *testing.B, eps []string, writer, reader *clientv3.Client, g *scaleGroup) *burstSide {
	w, err := biregister.NewWatcher(nil, g.prefix, 600, biregister.WithClient(reader))
	if err != nil {
		b.Fatal(err)
	}
	// The consumer of Changes, which counts the burst's changes; armed per
	// burst with the revision the burst comes after.
	type arm struct {
		after int64
		done  chan time.Time
	}
	arms := make(chan arm)
	var resyncs atomic.Int64
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		var cur arm
		count := 0
		changes := w.Changes()
		for {
			select {
			case a := <-arms:
				cur, count = a, 0
			case c, ok := <-changes:
				if !ok {
					return
				}
				if c.Op == biregister.OpResync {
					resyncs.Add(1)
					continue
				}
				if cur.done != nil && c.Revision > cur.after {
					if count++; count == burstSize {
						cur.done <- time.Now()
					}
				}
			}
		}
	}()
	probeWatcher(b, writer, w, g.prefix)
	settle(b, eps, nil)
	return &burstSide{
		g: g,
		close: func() {
			w.Close()
			<-consumerDone
		},
		arm: func(bu *burst, after int64) <-chan burstDone {
			changesDone := make(chan time.Time, 1)
			arms <- arm{after: after, done: changesDone}
			done := make(chan burstDone, 1)
			go func() {
				// Done when the burst's last change comes out of Changes, the
				// consumer counting changes as the raw side counts events:
				// the cache is updated before a change is delivered. (Polling
				// the cache as well would charge this side a second reader.)
				var changesAt time.Time
				select {
				case changesAt = <-changesDone:
				case <-time.After(benchWait):
					done <- burstDone{err: fmt.Errorf("the burst's %d changes did not all come out of Changes (%d RESYNCs)", burstSize, resyncs.Load())}
					return
				}
				for _, m := range bu.final {
					if got := w.GetValueByName(m.name); got != m.value {
						done <- burstDone{err: fmt.Errorf("after the burst %s = %q, want %q", m.name, got, m.value)}
						return
					}
				}
				done <- burstDone{at: changesAt, changesAt: changesAt}
			}()
			return done
		},
	}
}

func newRawBurstSide(b *testing.B, reader *clientv3.Client, g *scaleGroup) *burstSide {
	wch, cancel := openWatch(b, reader, g.prefix)
	return &burstSide{
		g:     g,
		close: cancel,
		arm: func(_ *burst, after int64) <-chan burstDone {
			done := make(chan burstDone, 1)
			go func() {
				count := 0
				for resp := range wch {
					for _, ev := range resp.Events {
						if ev.Kv.ModRevision > after {
							count++
						}
					}
					if count == burstSize {
						done <- burstDone{at: time.Now()}
						return
					}
				}
				done <- burstDone{err: errors.New("watch closed")}
			}()
			return done
		},
	}
}

// burstStats are the timings of one side's bursts, each from just before
// the first put.
type burstStats struct {
	all, changes, tail benchutil.Latencies
}

// timeBurst sends one burst to side's group and records how long it took
// to come out of side. The timer runs only while the burst is under way.
func timeBurst(b *testing.B, writer *clientv3.Client, side *burstSide, st *burstStats) {
	bu := newBurst(side.g)
	done := side.arm(bu, currentRevision(b, writer))
	b.StartTimer()
	start := time.Now()
	acked, err := bu.run(writer)
	if err != nil {
		b.Fatal(err)
	}
	var d burstDone
	select {
	case d = <-done:
	case <-time.After(benchWait):
		b.Fatal("burst not received in time")
	}
	b.StopTimer()
	if d.err != nil {
		b.Fatal(d.err)
	}
	st.all.Add(d.at.Sub(start))
	st.tail.Add(d.at.Sub(acked))
	if !d.changesAt.IsZero() {
		st.changes.Add(d.changesAt.Sub(start))
	}
}

// timeBursts sends b.N bursts, to each of sides in turn, and returns each
// side's timings. The timer runs only while a burst is under way.
func timeBursts(b *testing.B, writer *clientv3.Client, sides ...*burstSide) []burstStats {
	st := make([]burstStats, len(sides))
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		j := i % len(sides)
		timeBurst(b, writer, sides[j], &st[j])
	}
	return st
}

func burstBiregister(b *testing.B, eps []string, writer, reader *clientv3.Client, g *scaleGroup) {
	side := newBiregisterBurstSide(b, eps, writer, reader, g)
	defer side.close()
	st := timeBursts(b, writer, side)[0]
	b.ReportMetric(ms(st.all.Mean()), "cache-ms")
	b.ReportMetric(ms(st.changes.Mean()), "changes-ms")
	b.ReportMetric(ms(st.tail.Mean()), "tail-ms")
}

func burstRawWatch(b *testing.B, writer, reader *clientv3.Client, g *scaleGroup) {
	side := newRawBurstSide(b, reader, g)
	defer side.close()
	st := timeBursts(b, writer, side)[0]
	b.ReportMetric(ms(st.all.Mean()), "events-ms")
	b.ReportMetric(ms(st.tail.Mean()), "tail-ms")
}

// burstInterleaved takes turns, burst by burst, between a biregister Watcher
// of g and a raw watch of g's twin (a group of the same size), both set up
// for the whole run, so that whatever else the machine does falls on both
// alike.
func burstInterleaved(b *testing.B, eps []string, writer, reader *clientv3.Client, g, twin *scaleGroup) {
	sides := [2]*burstSide{newBiregisterBurstSide(b, eps, writer, reader, g), newRawBurstSide(b, reader, twin)}
	defer sides[0].close()
	defer sides[1].close()
	st := timeBursts(b, writer, sides[0], sides[1])
	b.ReportMetric(ms(st[0].all.Mean()), "biregister-cache-ms")
	b.ReportMetric(ms(st[0].changes.Mean()), "biregister-changes-ms")
	b.ReportMetric(ms(st[1].all.Mean()), "raw-events-ms")
	if st[0].all.Len() > 0 && st[1].all.Len() > 0 {
		b.ReportMetric(float64(st[0].all.Mean())/float64(st[1].all.Mean()), "biregister/raw-x")
	}
}
