package biregister_test

// The matrix's concurrency: every method of a Register at once with every
// other, Close among them.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/biregister/biregister"
)

// storm is every method of one Register called over and over, each on a
// goroutine of its own, until the Register closes or the storm's context
// ends.
type storm struct {
	r    biregister.Register
	done sync.WaitGroup

	mu       sync.Mutex
	problems []string
	// succeeded counts the calls that did their work, by method.
	succeeded map[string]int
	// values are those etcd may hold: the last one a SetValue returned nil
	// for, and those tried after it.
	values []string
}

// startStorm starts a storm on r until ctx ends or r closes.
func startStorm(ctx context.Context, r biregister.Register) *storm {
	s := &storm{r: r, values: []string{r.GetValueByName(r.MyName())}, succeeded: map[string]int{}}
	// bounded calls fn with a context that ends after d, until ctx ends or
	// r closes, pacing calls by every, and reports a call beyond bound or
	// an error other than the context's or ErrClosed.
	bounded := func(what string, d, bound, every time.Duration, fn func(ctx context.Context, i int) error) {
		s.done.Add(1)
		go func() {
			defer s.done.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for i := 0; ; i++ {
				callCtx, cancel := context.WithTimeout(ctx, d)
				start := time.Now()
				err := fn(callCtx, i)
				took := time.Since(start)
				cancel()
				if took > bound {
					s.problem("%s took %v", what, took)
				}
				if err == nil {
					s.mu.Lock()
					s.succeeded[what]++
					s.mu.Unlock()
				}
				switch {
				case errors.Is(err, biregister.ErrClosed), ctx.Err() != nil:
					return
				case err != nil && !errors.Is(err, context.DeadlineExceeded):
					s.problem("%s: %v", what, err)
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}
	name := r.MyName()
	bounded("SetValue", time.Second, time.Second+promptly, 2*time.Millisecond, func(ctx context.Context, i int) error {
		value := fmt.Sprint(name, i)
		err := r.SetValue(ctx, value)
		s.mu.Lock()
		defer s.mu.Unlock()
		if err == nil {
			s.values = []string{value}
		} else {
			s.values = append(s.values, value)
		}
		return err
	})
	bounded("Resign", time.Second, time.Second+promptly, 30*time.Millisecond, func(ctx context.Context, _ int) error { return r.Resign(ctx) })
	bounded("WaitLeader", 100*time.Millisecond, 100*time.Millisecond+promptly, time.Millisecond, func(ctx context.Context, _ int) error { return r.WaitLeader(ctx) })
	bounded("WaitTerm", 100*time.Millisecond, 100*time.Millisecond+promptly, time.Millisecond, func(ctx context.Context, _ int) error {
		term, err := r.WaitTerm(ctx)
		if (term == nil) == (err == nil) {
			return fmt.Errorf("term %v with error %v", term, err)
		}
		return err
	})
	bounded("reads", readBound, readBound, time.Millisecond, func(context.Context, int) error {
		if problems := readAll(r); len(problems) > 0 {
			return errors.New(strings.Join(problems, "; "))
		}
		select {
		case <-r.Closed():
			return biregister.ErrClosed
		default:
			return nil
		}
	})
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		err := r.Lead(ctx, func(term *biregister.Term) {
			if term.Revision() == 0 {
				s.problem("a term of revision 0")
			}
			s.mu.Lock()
			s.succeeded["Lead"]++
			s.mu.Unlock()
			<-term.Done()
		})
		if !errors.Is(err, biregister.ErrClosed) && !errors.Is(err, context.Canceled) {
			s.problem("Lead: %v", err)
		}
	}()
	return s
}

func (s *storm) problem(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
}

// end waits, at most bound, for every call of the storm to return, and
// fails the test with what went wrong. It returns the values etcd may hold.
func (s *storm) end(t *testing.T, bound time.Duration) []string {
	t.Helper()
	returnsWithin(t, "the storm on "+short(s.r.MyKey()), bound, func() struct{} { s.done.Wait(); return struct{}{} })
	s.mu.Lock()
	defer s.mu.Unlock()
	t.Logf("%s: calls that did their work: %v", short(s.r.MyKey()), s.succeeded)
	require.Empty(t, s.problems)
	return slices.Clone(s.values)
}

// Every method of two Registers at once, over and over — SetValue, Resign,
// WaitLeader, WaitTerm, Lead and the reads — while one of them closes,
// in rounds with clients of their own, one shared client, and a Watcher
// whose consumer reads nothing with a buffer of 1, Close called from two
// goroutines at once: every call returns
// within its bound with its result, ctx.Err() or ErrClosed; the two never
// lead at one moment; the closed one is gone from etcd when Close returns;
// the other, once its storm ends, is in its contract state with a value it
// was given.
func TestMatrixConcurrent(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	shared := etcd.Client(t)
	variants := [][]biregister.Option{
		nil,
		{biregister.WithClient(shared)},
		{biregister.WithBufferSize(1)},
	}
	for round := range 2 * len(variants) {
		opts := variants[round%len(variants)]
		t.Run(fmt.Sprint("round ", round), func(t *testing.T) {
			prefix := fmt.Sprint("/storm", round)
			a := startRegister(t, etcd.Endpoints(), prefix, "a", "v", matrixTTL, opts...)
			b := startRegister(t, etcd.Endpoints(), prefix, "b", "v", matrixTTL, opts...)
			w := startWatcher(t, etcd.Endpoints(), prefix, opts...)
			stopSampling := sampleLeading(a, b)
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			stormA, stormB := startStorm(ctx, a), startStorm(ctx, b)

			// Close a in the middle of its storm, from two goroutines.
			<-time.After(time.Duration(200+rand.IntN(600)) * time.Millisecond)
			returnsWithin(t, "Close", closeBound(matrixLease), func() struct{} {
				var closing sync.WaitGroup
				closing.Add(2)
				for range 2 {
					go func() {
						defer closing.Done()
						a.Close()
					}()
				}
				closing.Wait()
				return struct{}{}
			})
			resp, err := cli.Get(context.Background(), a.MyKey())
			require.NoError(t, err)
			require.Empty(t, resp.Kvs, "the key of a closed Register is still in etcd")
			stormA.end(t, readBound)
			checkClosed(t, a)

			// b goes on alone, and leads at times.
			leads, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			require.NoError(t, b.WaitLeader(leads))
			stop()
			values := stormB.end(t, requestBound(matrixLease))
			require.Zero(t, stopSampling(), "two leaders at one moment")
			checkRegistered(t, cli, b, values, w)
			if round%len(variants) == 1 {
				require.Same(t, shared, b.EtcdClient())
			}
		})
	}
	// A shared client outlives every Register that used it.
	_, err := shared.Get(context.Background(), "/")
	require.NoError(t, err)
}
