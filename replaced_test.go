package biregister_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
)

// After etcd is replaced by an empty cluster, revisions start again, and
// the member's new registration could get the create revision its old one
// had: the old term's fence would then hold again, for a writer that still
// holds it. The Register never keeps such a registration, and the old term
// ends for its registration lost, not for another member leading.
func TestFenceOfTermAcrossReplacedEtcd(t *testing.T) {
	etcd := startEtcd(t)
	a := startRegister(t, etcd.Endpoints(), "/replaced-fence", "a", "v", 2)
	term := waitTerm(t, a)
	old := term.Revision()

	etcd.Wipe(t)
	requireEnded(t, term, biregister.ErrRegistrationLost)
	fresh := etcd.Client(t)
	require.Eventually(t, func() bool { return a.AmILeader() && a.Status().Registered }, waitFor, time.Millisecond)
	resp, err := fresh.Get(context.Background(), a.MyKey())
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	t.Logf("old registration at revision %d, new one at %d", old, resp.Kvs[0].CreateRevision)
	require.NotEqual(t, old, resp.Kvs[0].CreateRevision, "registered again at the old term's revision")
	fenced, err := fresh.Txn(context.Background()).If(term.Fence()).Then(clientv3.OpPut("/owner", "a")).Commit()
	require.NoError(t, err)
	require.False(t, fenced.Succeeded, "the fence of a term of the replaced etcd holds in the new one")
	next := waitTerm(t, a)
	require.NotEqual(t, old, next.Revision())
}
