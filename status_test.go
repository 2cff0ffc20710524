package biregister_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/faultproxy"
)

// Status tells a Register's and a Watcher's state, and Ready and its
// handler say they are ready, while all is well.
func TestStatusAndReady(t *testing.T) {
	etcd := startEtcd(t)
	r := startRegister(t, etcd.Endpoints(), "/status", "a", "v", 5)
	startRegister(t, etcd.Endpoints(), "/status", "b", "v", 5)
	w := startWatcher(t, etcd.Endpoints(), "/status")

	st := r.Status()
	require.True(t, st.Registered)
	require.Equal(t, r.MyRevision(), st.CreateRevision)
	require.True(t, st.Leading)
	require.Greater(t, st.LeaseLeft, time.Duration(0))
	require.LessOrEqual(t, st.LeaseLeft, 5*time.Second)
	require.WithinDuration(t, time.Now(), st.Since, waitFor)
	require.EqualValues(t, 1, st.Listings)
	require.Zero(t, st.Resyncs)
	require.Eventually(t, func() bool { return r.Status().Members == 2 }, waitFor, time.Millisecond)

	require.Eventually(t, func() bool { return w.Status().Current }, waitFor, time.Millisecond)
	ws := w.Status()
	require.Equal(t, 2, ws.Members)
	require.False(t, ws.Registered, "a Watcher has no registration")
	require.WithinDuration(t, time.Now(), ws.LastAnswer, waitFor)
	require.NoError(t, w.Ready())
	require.NoError(t, r.Ready())

	for _, x := range []biregister.Watcher{w, r} {
		rec := httptest.NewRecorder()
		biregister.ReadyHandler(x).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ready", nil))
		require.Equal(t, http.StatusOK, rec.Code)
		require.Equal(t, "ready\n", rec.Body.String())
	}

	r.Close()
	w.Close()
	for _, x := range []biregister.Watcher{w, r} {
		require.ErrorIs(t, x.Ready(), biregister.ErrNotReady)
		rec := httptest.NewRecorder()
		biregister.ReadyHandler(x).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ready", nil))
		require.Equal(t, http.StatusServiceUnavailable, rec.Code)
		require.Contains(t, rec.Body.String(), "closed")
	}
}

// A Register cut off silently is not ready from its lease deadline on:
// before etcd can have expired its registration, as AmILeader; registered
// again after the heal, it is ready within 100 ms.
func TestRegisterReadinessAcrossCut(t *testing.T) {
	etcd := startEtcd(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	const ttl = 3
	r := startRegister(t, []string{proxy.Endpoint()}, "/ready", "a", "v", ttl)
	require.NoError(t, r.Ready())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gone := etcd.Client(t).Watch(ctx, r.MyKey(), clientv3.WithRev(r.MyRevision()+1), clientv3.WithFilterPut())

	proxy.Stall()
	stalled := time.Now()
	var notReady time.Time
	require.Eventually(t, func() bool {
		if r.Ready() != nil {
			notReady = time.Now()
			return true
		}
		return false
	}, waitFor, time.Millisecond)
	require.ErrorIs(t, r.Ready(), biregister.ErrNotReady)
	t.Logf("not ready %v after the stall began: %v", notReady.Sub(stalled), r.Ready())
	var expired time.Time
	select {
	case <-gone:
		expired = time.Now()
	case <-time.After(waitFor):
		t.Fatal("etcd did not expire the registration")
	}
	require.True(t, notReady.Before(expired), "ready until %v, etcd expired the registration at %v", notReady, expired)
	t.Logf("etcd expired the registration %v after it was not ready any more", expired.Sub(notReady))
	// Its cache, confirmed by nothing but the keepalive answers, is no
	// longer known to be current either.
	require.Eventually(t, func() bool { return !r.Status().Current }, waitFor, 10*time.Millisecond)

	proxy.Heal()
	old := r.Status().CreateRevision
	require.Eventually(t, func() bool {
		st := r.Status()
		return st.Registered && st.CreateRevision != old
	}, waitFor, time.Millisecond)
	require.Eventually(t, func() bool { return r.Ready() == nil }, waitFor, time.Millisecond)
	ready := time.Now()
	since := r.Status().Since
	t.Logf("ready %v after registering again", ready.Sub(since))
	require.Less(t, ready.Sub(since), 100*time.Millisecond, "not ready within 100 ms of registering again")
}

// What each probe says through an etcd outage: ReadyHandler turns 503 for
// a Register and a Watcher alike (what they know of the group cannot be
// relied on), ServingHandler stays 200 (the server still serves the clients
// that know its address); both are 200 again after it, and ServingHandler
// 503 once the Register closes.
func TestProbesThroughEtcdOutage(t *testing.T) {
	etcd := startEtcd(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	const ttl = 2
	r := startRegister(t, []string{proxy.Endpoint()}, "/outage", "a", "v", ttl)
	w := startWatcher(t, []string{proxy.Endpoint()}, "/outage")
	status := func(h http.Handler) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		return rec.Code
	}
	ready, watcherReady, serving := biregister.ReadyHandler(r), biregister.ReadyHandler(w), biregister.ServingHandler(r)
	require.Equal(t, http.StatusOK, status(ready))
	require.Equal(t, http.StatusOK, status(serving))

	proxy.Stall()
	require.Eventually(t, func() bool {
		return status(ready) == http.StatusServiceUnavailable && status(watcherReady) == http.StatusServiceUnavailable
	}, waitFor, 10*time.Millisecond, "ReadyHandler still says ready in an etcd outage")
	require.Equal(t, http.StatusOK, status(serving), "an etcd outage made the server not serving")

	proxy.Heal()
	require.Eventually(t, func() bool {
		return status(ready) == http.StatusOK && status(watcherReady) == http.StatusOK
	}, waitFor, 10*time.Millisecond)
	r.Close()
	require.Equal(t, http.StatusServiceUnavailable, status(serving))
}
