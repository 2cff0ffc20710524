// Benchmark 2, graceful failover: from the leader leaving to the next member
// knowing it leads, for biregister (WaitLeader, polled AmILeader),
// concurrency.Election, and a revoked lease seen by a raw watch as the floor
// (BenchmarkFailover).

package biregister_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/benchutil"
)

// failoverPeer is one way of handing leadership over, set up once and
// stepped through failovers: prepare readies the next failover (untimed) and
// returns it.
type failoverPeer struct {
	name    string
	prepare func(b *testing.B) *failoverStep
	close   func()
}

// failoverStep is one prepared failover: trigger is what is timed from (the
// leader leaving), done yields when the successor knows it leads.
type failoverStep struct {
	trigger func() error
	done    <-chan time.Time
	errs    <-chan error
	// deleted, if not nil, yields when a raw watch saw the old leader's key
	// deleted: it splits the failover into the leaving and the learning.
	deleted <-chan time.Time
	// after runs once the failover is complete (untimed).
	after func()
}

// newFloorPeer: a lease revoked → a raw watch sees its key's DELETE.
func newFloorPeer(b *testing.B, clients [2]*clientv3.Client, other *clientv3.Client) *failoverPeer {
	prefix := uniquePrefix("failover/raw")
	wch, cancelWatch := openWatch(b, other, prefix)
	serial := 0
	return &failoverPeer{
		name:  "raw-revoke-watch",
		close: cancelWatch,
		prepare: func(b *testing.B) *failoverStep {
			ctx, cancel := ctxWait()
			defer cancel()
			c := clients[serial%2]
			key := fmt.Sprintf("%sm%06d", prefix, serial)
			serial++
			lease, err := c.Grant(ctx, benchTTL)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Put(ctx, key, "v", clientv3.WithLease(lease.ID)); err != nil {
				b.Fatal(err)
			}
			done, errs := watchDelete(wch, key)
			return &failoverStep{
				trigger: func() error {
					ctx, cancel := ctxWait()
					defer cancel()
					_, err := c.Revoke(ctx, lease.ID)
					return err
				},
				done: done,
				errs: errs,
			}
		},
	}
}

// newBiregisterFailoverPeer: the leader's Close() → the next member leads. The next
// member learns it by polling AmILeader (poll) or from WaitLeader.
func newBiregisterFailoverPeer(b *testing.B, eps []string, clients [2]*clientv3.Client, other *clientv3.Client, poll bool) *failoverPeer {
	prefix := uniquePrefix("failover/biregister")
	serial := 0
	newMember := func() biregister.Register {
		r, err := biregister.NewRegister(nil, prefix, fmt.Sprintf("m%06d", serial), "v", benchTTL, biregister.WithClient(clients[serial%2]))
		if err != nil {
			b.Fatal(err)
		}
		serial++
		return r
	}
	ctx, cancel := context.WithCancel(context.Background())
	leader := newMember()
	wctx, waitCancel := ctxWait()
	defer waitCancel()
	if err := leader.WaitLeader(wctx); err != nil {
		b.Fatal(err)
	}
	// A raw watch on the group tells when etcd deleted the old leader's key.
	wch, cancelWatch := openWatch(b, other, prefix)
	name := "biregister-WaitLeader"
	if poll {
		name = "biregister-AmILeader-poll"
	}
	return &failoverPeer{
		name: name,
		close: func() {
			cancel()
			cancelWatch()
			leader.Close()
		},
		prepare: func(b *testing.B) *failoverStep {
			next := newMember()
			probeWatcher(b, other, next, prefix)
			settle(b, eps, nil)
			if next.AmILeader() || !leader.AmILeader() {
				b.Fatal("wrong leader before the failover")
			}
			done, errs := make(chan time.Time, 1), make(chan error, 1)
			started := make(chan struct{})
			if poll {
				go func() {
					close(started)
					for !next.AmILeader() {
						if ctx.Err() != nil {
							errs <- ctx.Err()
							return
						}
						// Not a bare spin: on 2 cores a spinning reader takes
						// a core from etcd and the library.
						time.Sleep(10 * time.Microsecond)
					}
					done <- time.Now()
				}()
			} else {
				go func() {
					close(started)
					if err := next.WaitLeader(ctx); err != nil {
						errs <- err
						return
					}
					done <- time.Now()
				}()
			}
			<-started
			deleted, _ := watchDelete(wch, leader.MyKey())
			old := leader
			return &failoverStep{
				trigger: func() error { old.Close(); return nil },
				done:    done,
				errs:    errs,
				deleted: deleted,
				after:   func() { leader = next },
			}
		},
	}
}

// newElectionPeer: the leader's Session.Close() → the next candidate's
// Campaign returns.
func newElectionPeer(b *testing.B, eps []string, clients [2]*clientv3.Client) *failoverPeer {
	prefix := uniquePrefix("failover/election")
	ctx, cancel := context.WithCancel(context.Background())
	serial := 0
	newSession := func() (*concurrency.Session, *concurrency.Election) {
		s, err := concurrency.NewSession(clients[serial%2], concurrency.WithTTL(benchTTL))
		if err != nil {
			b.Fatal(err)
		}
		serial++
		return s, concurrency.NewElection(s, prefix)
	}
	leader, election := newSession()
	if err := election.Campaign(ctx, "v"); err != nil {
		b.Fatal(err)
	}
	return &failoverPeer{
		name: "concurrency-Election",
		close: func() {
			cancel()
			leader.Close()
		},
		prepare: func(b *testing.B) *failoverStep {
			// The candidate's watch on the leader's key must be in place and
			// synced (it starts at a past revision) before the leader
			// leaves. It cannot be seen from here: wait until etcd holds
			// one watcher more than before and none is unsynced. (Should a
			// watcher of someone else's end meanwhile, give up counting
			// after 500 ms and rely on 250 ms — over two of etcd's 100 ms
			// catch-up rounds — and no unsynced watcher.)
			settle(b, eps, nil)
			before := etcdWatchers(b, eps)
			next, nextElection := newSession()
			done, errs := make(chan time.Time, 1), make(chan error, 1)
			go func() {
				if err := nextElection.Campaign(ctx, "v"); err != nil {
					errs <- err
					return
				}
				done <- time.Now()
			}()
			started := time.Now()
			if err := benchutil.WaitWatchesSettled(eps[0], func(w float64) bool { return w >= before+1 }, 500*time.Millisecond); err != nil {
				time.Sleep(250*time.Millisecond - time.Since(started))
				settle(b, eps, nil)
			}
			old := leader
			return &failoverStep{
				trigger: old.Close,
				done:    done,
				errs:    errs,
				after:   func() { leader = next },
			}
		},
	}
}

// failoverStats are one peer's failover latencies.
type failoverStats struct{ lat, deleted benchutil.Latencies }

// timeFailover prepares one failover of p and times it; the timer runs only
// from the trigger to the successor knowing.
func timeFailover(b *testing.B, p *failoverPeer, st *failoverStats) {
	step := p.prepare(b)
	time.Sleep(quietGap)
	b.StartTimer()
	start := time.Now()
	if err := step.trigger(); err != nil {
		b.Fatal(err)
	}
	end := awaitTime(b, step.done, step.errs)
	b.StopTimer()
	st.lat.Add(end.Sub(start))
	if step.deleted != nil {
		st.deleted.Add(awaitTime(b, step.deleted, nil).Sub(start))
	}
	if step.after != nil {
		step.after()
	}
}

func BenchmarkFailover(b *testing.B) {
	eps := startBenchEtcd(b)
	// Members alternate between two clients, as two processes would; the
	// raw watches and the probes have their own.
	clients := [2]*clientv3.Client{benchClient(b, eps), benchClient(b, eps)}
	other := benchClient(b, eps)
	peers := []struct {
		name string
		mk   func(b *testing.B) *failoverPeer
	}{
		{"raw-revoke-watch", func(b *testing.B) *failoverPeer { return newFloorPeer(b, clients, other) }},
		{"biregister-WaitLeader", func(b *testing.B) *failoverPeer { return newBiregisterFailoverPeer(b, eps, clients, other, false) }},
		{"biregister-AmILeader-poll", func(b *testing.B) *failoverPeer { return newBiregisterFailoverPeer(b, eps, clients, other, true) }},
		{"concurrency-Election", func(b *testing.B) *failoverPeer { return newElectionPeer(b, eps, clients) }},
	}
	for _, peer := range peers {
		b.Run(peer.name, func(b *testing.B) {
			p := peer.mk(b)
			defer p.close()
			var st failoverStats
			b.ResetTimer()
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				timeFailover(b, p, &st)
			}
			st.lat.Report(b, "")
			st.deleted.Report(b, "raw-delete-seen")
		})
	}
	// The four take turns, failover by failover, so that whatever else the
	// machine does falls on all of them alike: separate runs of the floor
	// drift by ±40 % on this VM.
	b.Run("interleaved", func(b *testing.B) {
		var live []*failoverPeer
		for _, peer := range peers {
			p := peer.mk(b)
			defer p.close()
			live = append(live, p)
		}
		st := make([]failoverStats, len(live))
		b.ResetTimer()
		b.StopTimer()
		for i := 0; i < b.N; i++ {
			j := i % len(live)
			timeFailover(b, live[j], &st[j])
		}
		floor := st[0].lat.Quantile(0.5)
		for j, p := range live {
			st[j].lat.Report(b, p.name)
			st[j].deleted.Report(b, p.name+"-raw-delete-seen")
			if j > 0 && floor > 0 && st[j].lat.Len() > 0 {
				b.ReportMetric(float64(st[j].lat.Quantile(0.5))/float64(floor), p.name+"/floor-p50-x")
			}
		}
	})
}
