package biregister_test

// The matrix's writes from outside: a member's key changed by another
// client, then each method of the Register.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/faultproxy"
)

// Each way of changing a member's key from outside — deleted, put without a
// lease (with another value or its own), put in place with another lease,
// put with its lease and another value, its lease revoked, taken by another
// live member until that one leaves — followed at once by each method:
// SetValue, Resign, WaitTerm, Lead and Close, each before the Register hears
// of the write (its answers from etcd held back a little) and after it has
// acted on it. Every call returns within its
// bound; a term of the lost registration ends; and the Register ends in its
// contract state, with the value it last accepted (a SetValue refused
// because the name is taken is not carried by the next registration).
func TestMatrixOutsideWrites(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	ctx := context.Background()
	type write func(t *testing.T, r biregister.Register) (free func())
	put := func(value string, opts ...clientv3.OpOption) write {
		return func(t *testing.T, r biregister.Register) func() {
			_, err := cli.Put(ctx, r.MyKey(), value, opts...)
			require.NoError(t, err)
			return func() {}
		}
	}
	writes := []struct {
		name  string
		write write
	}{
		{"deleted", func(t *testing.T, r biregister.Register) func() {
			_, err := cli.Delete(ctx, r.MyKey())
			require.NoError(t, err)
			return func() {}
		}},
		{"put without a lease", put("outside")},
		{"put without a lease, same value", put("v")},
		{"put with another lease", func(t *testing.T, r biregister.Register) func() {
			other, err := cli.Grant(ctx, 600)
			require.NoError(t, err)
			return put("v", clientv3.WithLease(other.ID))(t, r)
		}},
		{"put with its lease, another value", func(t *testing.T, r biregister.Register) func() {
			return put("outside", clientv3.WithLease(clientv3.LeaseID(heldBy(t, cli, r).lease)))(t, r)
		}},
		{"lease revoked", func(t *testing.T, r biregister.Register) func() {
			_, err := cli.Revoke(ctx, clientv3.LeaseID(heldBy(t, cli, r).lease))
			require.NoError(t, err)
			return func() {}
		}},
		{"taken by another live member", func(t *testing.T, r biregister.Register) func() {
			lease := takeName(t, cli, r)
			return func() {
				_, err := cli.Revoke(ctx, lease)
				require.NoError(t, err)
			}
		}},
	}
	methods := []struct {
		name string
		// do calls the method right after the write, frees the name, and
		// returns the value the Register must end with.
		do func(t *testing.T, r biregister.Register, term *biregister.Term, free func()) string
	}{
		{"SetValue", func(t *testing.T, r biregister.Register, _ *biregister.Term, free func()) string {
			err := returnsWithin(t, "SetValue", requestBound(matrixLease), func() error { return r.SetValue(ctx, "after") })
			free()
			if err != nil {
				require.ErrorIs(t, err, biregister.ErrNameTaken)
				return "v"
			}
			return "after"
		}},
		{"Resign", func(t *testing.T, r biregister.Register, _ *biregister.Term, free func()) string {
			err := returnsWithin(t, "Resign", requestBound(matrixLease), func() error { return r.Resign(ctx) })
			require.NoError(t, err)
			free()
			return "v"
		}},
		{"WaitTerm", func(t *testing.T, r biregister.Register, term *biregister.Term, free func()) string {
			requireEnded(t, term, biregister.ErrRegistrationLost)
			free()
			next := waitTerm(t, r)
			require.Greater(t, next.Revision(), term.Revision())
			require.Equal(t, r.MyRevision(), next.Revision())
			return "v"
		}},
		{"Lead", func(t *testing.T, r biregister.Register, term *biregister.Term, free func()) string {
			leadCtx, stop := context.WithCancel(ctx)
			terms := make(chan *biregister.Term, 2)
			led := make(chan error, 1)
			go func() {
				led <- r.Lead(leadCtx, func(term *biregister.Term) {
					terms <- term
					<-term.Done()
				})
			}()
			free()
			for {
				var got *biregister.Term
				select {
				case got = <-terms:
				case <-time.After(waitFor):
					t.Fatal("Lead gave no term of the new registration")
				}
				if got.Revision() > term.Revision() {
					break
				}
			}
			stop()
			select {
			case err := <-led:
				require.ErrorIs(t, err, context.Canceled)
			case <-time.After(readBound):
				t.Fatal("Lead did not return once its ctx ended")
			}
			return "v"
		}},
	}
	for i, wr := range writes {
		for j, m := range methods {
			for k, seen := range []bool{false, true} {
				order := "before the Register sees it"
				if seen {
					order = "after the Register saw it"
				}
				t.Run(fmt.Sprintf("%s, then %s, %s", wr.name, m.name, order), func(t *testing.T) {
					prefix := fmt.Sprintf("/outside-%d-%d-%d", i, j, k)
					proxy := faultproxy.Start(t, etcd.Endpoint(0))
					r := startRegister(t, []string{proxy.Endpoint()}, prefix, "a", "v", matrixTTL)
					w := startWatcher(t, etcd.Endpoints(), prefix)
					term := waitTerm(t, r)
					if !seen {
						// The Register hears of the write only after the
						// method has begun.
						proxy.DelayReplies(100 * time.Millisecond)
					}
					free := wr.write(t, r)
					if seen {
						eventually(t, "the Register did not see the write", func() string {
							if r.MyRevision() == term.Revision() {
								return "same registration"
							}
							return ""
						})
					}
					value := m.do(t, r, term, free)
					proxy.DelayReplies(0)
					checkRegistered(t, cli, r, []string{value}, w)
					checkReads(t, r)
				})
			}
		}
		t.Run(wr.name+", then Close", func(t *testing.T) {
			prefix := fmt.Sprintf("/outside-%d-close", i)
			r := startRegister(t, etcd.Endpoints(), prefix, "a", "v", matrixTTL)
			w := startWatcher(t, etcd.Endpoints(), prefix)
			free := wr.write(t, r)
			returnsWithin(t, "Close", closeBound(matrixLease), func() struct{} { r.Close(); return struct{}{} })
			checkClosed(t, r)
			free()
			eventually(t, "the Watcher differs from etcd", func() string {
				if !sameAsEtcd(t, cli, w, w.Prefix()) {
					return fmt.Sprint(w.GetNames())
				}
				return ""
			})
		})
	}
}
