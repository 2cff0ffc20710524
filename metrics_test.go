package biregister_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/biregister/biregister"
	"github.com/biregister/biregister/internal/faultproxy"
	"github.com/biregister/biregister/internal/metertest"
	"github.com/biregister/biregister/internal/syncbuf"
)

// The attributes the tests read measurements by.
func inGroup(prefix string) attribute.KeyValue { return attribute.String("biregister.prefix", prefix) }
func ofMember(name string) attribute.KeyValue  { return attribute.String("biregister.name", name) }
func forCause(c string) attribute.KeyValue     { return attribute.String("biregister.cause", c) }
func ofOp(op biregister.Op) attribute.KeyValue { return attribute.String("biregister.op", string(op)) }

// The instruments measure what they say, and every way of registering again
// moves its own cause.
func TestMetrics(t *testing.T) {
	etcd := startEtcd(t)
	m := metertest.New(t)
	cli := etcd.Client(t)
	r := startRegister(t, etcd.Endpoints(), "/metrics", "a", "v", 3, biregister.WithMeterProvider(m.Provider))
	w := startWatcher(t, etcd.Endpoints(), "/metrics", biregister.WithMeterProvider(m.Provider))
	eventually := func(what string, ok func() bool) {
		t.Helper()
		require.Eventually(t, ok, waitFor, 10*time.Millisecond, what)
	}

	require.EqualValues(t, 1, m.Value(t, "biregister.registrations", ofMember("a"), forCause("start")))
	require.EqualValues(t, 2, m.Value(t, "biregister.listings", inGroup("/metrics/"), forCause("start")), "the Register's and the Watcher's")
	require.EqualValues(t, 1, m.Value(t, "biregister.leader", ofMember("a")))
	require.Positive(t, m.Float(t, "biregister.lease.remaining", ofMember("a")))
	require.EqualValues(t, 1, m.Value(t, "biregister.members", inGroup("/metrics/")))
	eventually("leadership gained", func() bool {
		return m.Value(t, "biregister.leadership.changes", ofMember("a"), attribute.Bool("biregister.leading", true)) == 1
	})
	eventually("a keepalive round trip", func() bool { return m.Count(t, "biregister.keepalive.duration", ofMember("a")) > 0 })

	// The key deleted from outside.
	_, err := cli.Delete(context.Background(), r.MyKey())
	require.NoError(t, err)
	eventually("key_deleted", func() bool {
		return m.Value(t, "biregister.registrations", ofMember("a"), forCause("key_deleted")) == 1
	})

	// The key put from outside without a lease: not ours any more.
	eventually("registered again", func() bool { return r.Status().Registered })
	_, err = cli.Put(context.Background(), r.MyKey(), "v")
	require.NoError(t, err)
	eventually("key_replaced", func() bool {
		return m.Value(t, "biregister.registrations", ofMember("a"), forCause("key_replaced")) == 1
	})

	// The lease revoked: the key goes with it, and the lease is lost,
	// whichever of the two the Register hears of first.
	eventually("registered again", func() bool { return r.Status().Registered })
	got, err := cli.Get(context.Background(), r.MyKey())
	require.NoError(t, err)
	require.Len(t, got.Kvs, 1)
	_, err = cli.Revoke(context.Background(), clientv3.LeaseID(got.Kvs[0].Lease))
	require.NoError(t, err)
	eventually("lease_lost", func() bool {
		return m.Value(t, "biregister.registrations", ofMember("a"), forCause("lease_lost")) == 1
	})

	eventually("registered again", func() bool { return r.Status().Registered })
	require.NoError(t, r.Resign(context.Background()))
	require.EqualValues(t, 1, m.Value(t, "biregister.registrations", ofMember("a"), forCause("resigned")))

	require.Positive(t, m.Value(t, "biregister.changes", inGroup("/metrics/"), ofOp(biregister.OpPut)))
	require.Positive(t, m.Value(t, "biregister.changes", inGroup("/metrics/"), ofOp(biregister.OpDelete)))
	require.Positive(t, m.Value(t, "biregister.leadership.changes", ofMember("a"), attribute.Bool("biregister.leading", false)),
		"leadership lost with the key")
	_ = w

	// Each instrument is of the kind and unit README's table gives.
	kinds := map[string]string{}
	for _, scope := range m.Collect(t).ScopeMetrics {
		for _, metric := range scope.Metrics {
			var kind string
			switch data := metric.Data.(type) {
			case metricdata.Sum[int64]:
				if data.IsMonotonic {
					kind = "counter"
				}
			case metricdata.Gauge[int64], metricdata.Gauge[float64]:
				kind = "gauge"
			case metricdata.Histogram[float64]:
				kind = "histogram"
			}
			kinds[metric.Name] = kind + ", " + metric.Unit
		}
	}
	require.Equal(t, map[string]string{
		"biregister.members":            "gauge, {member}",
		"biregister.suspects":           "gauge, {member}",
		"biregister.protections":        "counter, {protection}",
		"biregister.leader":             "gauge, {leader}",
		"biregister.leadership.changes": "counter, {change}",
		"biregister.changes":            "counter, {change}",
		"biregister.listings":           "counter, {listing}",
		"biregister.registrations":      "counter, {registration}",
		"biregister.keepalive.duration": "histogram, s",
		"biregister.lease.remaining":    "gauge, s",
	}, kinds)
}

// A consumer that falls behind gets a RESYNC, counted as such.
func TestMetricsResync(t *testing.T) {
	etcd := startEtcd(t)
	m := metertest.New(t)
	w := startWatcher(t, etcd.Endpoints(), "/resync", biregister.WithMeterProvider(m.Provider), biregister.WithBufferSize(2))
	cli := etcd.Client(t)
	for _, name := range []string{"a", "b", "c", "d"} {
		_, err := cli.Put(context.Background(), "/resync/"+name, "v")
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return len(w.GetNames()) == 4 }, waitFor, time.Millisecond)
	for c := range w.Changes() {
		if c.Op == biregister.OpResync {
			break
		}
	}
	// The loop counts it once the consumer took it.
	require.Eventually(t, func() bool {
		return m.Value(t, "biregister.changes", inGroup("/resync/"), ofOp(biregister.OpResync)) == 1 && w.Status().Resyncs == 1
	}, waitFor, time.Millisecond)
}

// During a leader stall, the leader gauge summed over the two members is
// never above 1 at any collection, and the successor's reads 1 at the end.
func TestLeaderGaugeNeverTwo(t *testing.T) {
	etcd := startEtcd(t)
	proxy := faultproxy.Start(t, etcd.Endpoint(0))
	m := metertest.New(t)
	old := startRegister(t, []string{proxy.Endpoint()}, "/gauge", "old", "v", faultTTL, biregister.WithMeterProvider(m.Provider))
	next := startRegister(t, etcd.Endpoints(), "/gauge", "next", "v", faultTTL, biregister.WithMeterProvider(m.Provider))
	require.True(t, old.AmILeader())

	proxy.Stall()
	defer proxy.Heal()
	collections := 0
	deadline := time.Now().Add(waitFor)
	for {
		rm := m.Collect(t)
		collections++
		total := metertest.Value(rm, "biregister.leader", inGroup("/gauge/"))
		require.LessOrEqual(t, total, int64(1), "two leaders at collection %d", collections)
		if metertest.Value(rm, "biregister.leader", ofMember("next")) == 1 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the successor never led")
		time.Sleep(time.Millisecond)
	}
	t.Logf("%d collections until the successor led", collections)
	_ = next
}

// refusingMeter refuses every instrument the way the metric API allows: a
// nil instrument with an error.
type refusingMeter struct{ noop.Meter }

var errRefused = errors.New("instrument refused")

func (refusingMeter) Int64Counter(string, ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	return nil, errRefused
}
func (refusingMeter) Float64Histogram(string, ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	return nil, errRefused
}
func (refusingMeter) Int64ObservableGauge(string, ...metric.Int64ObservableGaugeOption) (metric.Int64ObservableGauge, error) {
	return nil, errRefused
}
func (refusingMeter) Float64ObservableGauge(string, ...metric.Float64ObservableGaugeOption) (metric.Float64ObservableGauge, error) {
	return nil, errRefused
}

type refusingProvider struct{ noop.MeterProvider }

func (refusingProvider) Meter(string, ...metric.MeterOption) metric.Meter { return refusingMeter{} }

// A MeterProvider that refuses every instrument measures nothing and breaks
// nothing: a Watcher lists and follows, a Register keeps its lease alive
// (keepalive round trips), registers again and leads, all without a panic.
func TestMetricsRefused(t *testing.T) {
	etcd := startEtcd(t)
	var logs syncbuf.Buffer
	opts := []biregister.Option{biregister.WithMeterProvider(refusingProvider{}),
		biregister.WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))}
	w := startWatcher(t, etcd.Endpoints(), "/refused-metrics", opts...)
	r := startRegister(t, etcd.Endpoints(), "/refused-metrics", "a", "v", 1, opts...)
	recvUntil(t, w.Changes(), func(c biregister.Change) bool { return c.Name == "a" })
	// Renewals every 333 ms: a few round trips recorded.
	before := r.Status().LeaseLeft
	require.Eventually(t, func() bool { return r.Status().LeaseLeft > before }, waitFor, 10*time.Millisecond)
	_, err := etcd.Client(t).Delete(context.Background(), r.MyKey())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return r.AmILeader() && w.GetValueByName("a") == "v" }, waitFor, 10*time.Millisecond)
	require.Contains(t, logs.String(), "metrics not all available")
}
