package biregister_test

// The matrix's requests that etcd, or its client, refuses.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
)

// A request refused for its size — by etcd (over its 1.5 MiB request
// limit) or by its client (over the 2 MiB it sends) — returns an error
// within its bound and leaves everything as it was: a constructor leaves
// no key and no lease, a SetValue leaves the key, the lease, the term and
// what the Register reads, and no later registration carries the refused
// value.
func TestMatrixRefused(t *testing.T) {
	etcd := startEtcd(t)
	eps := etcd.Endpoints()
	cli := etcd.Client(t)
	ctx := context.Background()

	t.Run("constructors", func(t *testing.T) {
		leases, err := cli.Leases(ctx)
		require.NoError(t, err)
		for _, tc := range []struct {
			what   string
			member string
			value  string
		}{
			{"value over etcd's limit", "a", overEtcdLimit},
			{"value over the client's limit", "a", overClientLimit},
			{"name over etcd's limit", overEtcdLimit, "v"},
			{"name over the client's limit", overClientLimit, "v"},
		} {
			err := returnsWithin(t, "NewRegister, "+tc.what, matrixLease+slack, func() error {
				r, err := biregister.NewRegister(eps, "/refused-new", tc.member, tc.value, matrixTTL)
				if err == nil {
					r.Close()
				}
				return err
			})
			require.Error(t, err, tc.what)
			require.NotErrorIs(t, err, biregister.ErrNameTaken, tc.what)
			if tc.member == "a" {
				err := returnsWithin(t, "NewRegisterNoName, "+tc.what, matrixLease+slack, func() error {
					r, err := biregister.NewRegisterNoName(eps, "/refused-new", tc.value, matrixTTL)
					if err == nil {
						r.Close()
					}
					return err
				})
				require.Error(t, err, tc.what)
			}
		}
		keys, err := cli.Get(ctx, "/refused-new/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		require.NoError(t, err)
		require.Zero(t, keys.Count, "a refused registration left a key")
		after, err := cli.Leases(ctx)
		require.NoError(t, err)
		require.Len(t, after.Leases, len(leases.Leases), "a refused registration left a lease")
	})

	t.Run("SetValue", func(t *testing.T) {
		a := startRegister(t, eps, "/refused-set", "a", "va", matrixTTL)
		b := startRegister(t, eps, "/refused-set", "b", "vb", matrixTTL)
		w := startWatcher(t, eps, "/refused-set")
		term := waitTerm(t, a)
		for _, r := range []biregister.Register{a, b} {
			before := heldBy(t, cli, r)
			for _, value := range []string{overEtcdLimit, overClientLimit} {
				err := returnsWithin(t, "SetValue", requestBound(matrixLease), func() error { return r.SetValue(ctx, value) })
				require.Error(t, err)
				checkUnchanged(t, cli, r, before)
			}
		}
		require.NoError(t, term.Err(), "a refused SetValue ended the term")
		require.True(t, a.AmILeader())
		// Registered again, the Register carries the value etcd accepted.
		_, err := cli.Delete(ctx, a.MyKey())
		require.NoError(t, err)
		requireEnded(t, term, biregister.ErrRegistrationLost)
		checkRegistered(t, cli, a, []string{"va"}, w)
		checkRegistered(t, cli, b, []string{"vb"}, w)
	})

	// A name whose key takes most of a request: registering (the key three
	// times in the Txn) and resigning fit, SetValue (four times) does not.
	t.Run("name of 0.45 MiB", func(t *testing.T) {
		name := strings.Repeat("n", 450<<10)
		r := construct(t, "NewRegister", matrixLease+slack, func() (biregister.Register, error) {
			return biregister.NewRegister(eps, "/refused-name", name, "v", matrixTTL)
		})
		w := startWatcher(t, eps, "/refused-name")
		checkRegistered(t, cli, r, []string{"v"}, w)
		checkReads(t, r)
		before := heldBy(t, cli, r)
		require.Error(t, returnsWithin(t, "SetValue", requestBound(matrixLease), func() error { return r.SetValue(ctx, "v2") }))
		checkUnchanged(t, cli, r, before)
		require.NoError(t, returnsWithin(t, "Resign", requestBound(matrixLease), func() error { return r.Resign(ctx) }))
		// Stepped down; back at once, or, if its put got no answer in
		// time (a loaded machine), by the loop soon after.
		require.Eventually(t, func() bool { return r.MyRevision() > before.revision }, waitFor, 5*time.Millisecond)
		checkRegistered(t, cli, r, []string{"v"}, w)
		_, err := cli.Delete(ctx, r.MyKey())
		require.NoError(t, err)
		checkRegistered(t, cli, r, []string{"v"}, w)
		returnsWithin(t, "Close", closeBound(matrixLease), func() struct{} { r.Close(); return struct{}{} })
		eventually(t, "the Watcher still holds the closed member", func() string {
			if w.Status().Members != 0 {
				return "still there"
			}
			return ""
		})
	})
}
