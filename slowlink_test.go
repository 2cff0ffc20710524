package biregister_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/biregister/biregister/internal/faultproxy"
)

// A link slow enough that every answer comes 1.5 s late, but not so slow
// that the lease lapses (ttl 4: keepalives every 1.33 s, each certainly
// alive 3.6 s from its send): a Register whose key is deleted from outside
// registers again over it. One round trip takes longer than ttl/3; the two
// that registering again takes fit in ttl.
func TestRegisterAgainOverSlowLink(t *testing.T) {
	etcd := startEtcd(t)
	cli := etcd.Client(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	const ttl = 4
	a := startRegister(t, []string{proxy.Endpoint()}, "/slow-link", "a", "v", ttl)
	before := a.MyRevision()
	proxy.DelayReplies(1500 * time.Millisecond)
	defer proxy.Heal()
	_, err := cli.Delete(context.Background(), a.MyKey())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return a.MyRevision() > before }, 3*ttl*time.Second, time.Millisecond,
		"never registered again over a link that keeps its lease alive")
	require.True(t, a.Status().Registered)
}
