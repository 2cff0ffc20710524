// Metrics: what a Watcher or a Register measures of itself through the
// OpenTelemetry metric API, when the user gives a MeterProvider
// (WithMeterProvider); without one, nothing is measured, at no cost.

package biregister

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// meterName names the library's meter: its import path, as OpenTelemetry
// asks of instrumentation libraries.
const meterName = "github.com/biregister/biregister"

// The attributes of the measurements.
const (
	attrPrefix  = attribute.Key("biregister.prefix")  // the group
	attrName    = attribute.Key("biregister.name")    // the member, on a Register's own measurements
	attrOp      = attribute.Key("biregister.op")      // PUT, DELETE, RESYNC
	attrCause   = attribute.Key("biregister.cause")   // why a listing or a registration happened
	attrLeading = attribute.Key("biregister.leading") // the leadership a change led to
)

// instruments are the library's instruments on one MeterProvider.
type instruments struct {
	meter             metric.Meter
	changes           metric.Int64Counter
	listings          metric.Int64Counter
	registrations     metric.Int64Counter
	leadershipChanges metric.Int64Counter
	keepAliveDuration metric.Float64Histogram
	members           metric.Int64ObservableGauge
	suspects          metric.Int64ObservableGauge
	protections       metric.Int64ObservableCounter
	leader            metric.Int64ObservableGauge
	leaseRemaining    metric.Float64ObservableGauge
}

// newInstruments makes the instruments of mp, or returns nil if mp is nil:
// nothing is measured then. An instrument the provider refuses is a no-op,
// and its error is returned: the metric API lets a provider return nil
// with its error, which would panic on the first measurement.
func newInstruments(mp metric.MeterProvider) (*instruments, error) {
	if mp == nil {
		return nil, nil
	}
	m := mp.Meter(meterName)
	if m == nil {
		return makeInstruments(noop.Meter{})
	}
	in, err := makeInstruments(m)
	if err != nil {
		fallback, _ := makeInstruments(noop.Meter{})
		in.orNoop(fallback)
	}
	return in, err
}

// orNoop replaces every instrument that in lacks by fallback's.
func (in *instruments) orNoop(fallback *instruments) {
	if in.meter == nil {
		in.meter = fallback.meter
	}
	replace(&in.changes, fallback.changes)
	replace(&in.listings, fallback.listings)
	replace(&in.registrations, fallback.registrations)
	replace(&in.leadershipChanges, fallback.leadershipChanges)
	replace(&in.keepAliveDuration, fallback.keepAliveDuration)
	replace(&in.members, fallback.members)
	replace(&in.suspects, fallback.suspects)
	replace(&in.protections, fallback.protections)
	replace(&in.leader, fallback.leader)
	replace(&in.leaseRemaining, fallback.leaseRemaining)
}

// replace sets *inst to fallback if it is nil.
func replace[T comparable](inst *T, fallback T) {
	var none T
	if *inst == none {
		*inst = fallback
	}
}

// makeInstruments makes the instruments of m, and returns the errors of
// those m refused.
func makeInstruments(m metric.Meter) (*instruments, error) {
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	in := &instruments{meter: m}
	var err error
	in.changes, err = m.Int64Counter("biregister.changes", metric.WithUnit("{change}"),
		metric.WithDescription("Changes handed to the consumer of Changes (PUT and DELETE once in the channel or queued behind it, RESYNC once in the channel), by op; a RESYNC stands for the changes a consumer that fell behind did not get."))
	keep(err)
	in.listings, err = m.Int64Counter("biregister.listings", metric.WithUnit("{listing}"),
		metric.WithDescription("Listings of the group, by cause: start, then each listing again."))
	keep(err)
	in.registrations, err = m.Int64Counter("biregister.registrations", metric.WithUnit("{registration}"),
		metric.WithDescription("Registrations of a member, by cause: start, then each registering again."))
	keep(err)
	in.leadershipChanges, err = m.Int64Counter("biregister.leadership.changes", metric.WithUnit("{change}"),
		metric.WithDescription("Times a member began (leading=true) or stopped (leading=false) leading."))
	keep(err)
	in.keepAliveDuration, err = m.Float64Histogram("biregister.keepalive.duration", metric.WithUnit("s"),
		metric.WithDescription("Round trip of an acknowledged keepalive, from its send to its answer."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
	keep(err)
	in.members, err = m.Int64ObservableGauge("biregister.members", metric.WithUnit("{member}"),
		metric.WithDescription("Members of the group in the cache."))
	keep(err)
	in.suspects, err = m.Int64ObservableGauge("biregister.suspects", metric.WithUnit("{member}"),
		metric.WithDescription("Members lost that are held as suspects: the gRPC resolver keeps their addresses (mass-loss protection)."))
	keep(err)
	in.protections, err = m.Int64ObservableCounter("biregister.protections", metric.WithUnit("{protection}"),
		metric.WithDescription("Times mass-loss protection turned on: the losses within its window exceeded its threshold of the group."))
	keep(err)
	in.leader, err = m.Int64ObservableGauge("biregister.leader", metric.WithUnit("{leader}"),
		metric.WithDescription("1 while the member leads (AmILeader), else 0."))
	keep(err)
	in.leaseRemaining, err = m.Float64ObservableGauge("biregister.lease.remaining", metric.WithUnit("s"),
		metric.WithDescription("How long the member's lease is certainly alive from now; 0 when it is not."))
	keep(err)
	return in, errors.Join(errs...)
}

// recorder records the measurements of one Watcher or Register, with its
// attributes built once: recording does not allocate. Only the loop that
// owns what is measured records; gauges are observed at collection time. A
// nil recorder, without a MeterProvider, records nothing and costs nothing.
type recorder struct {
	in        *instruments
	byOp      map[Op][]metric.AddOption
	byCause   [numCauses][]metric.AddOption
	byLeading [2][]metric.AddOption
	own       []metric.RecordOption // the fixed attributes, for the histogram
	observed  metric.ObserveOption  // the fixed attributes, for the gauges
}

// newRecorder returns the recorder of in with attrs, or nil if in is nil.
func newRecorder(in *instruments, attrs ...attribute.KeyValue) *recorder {
	if in == nil {
		return nil
	}
	with := func(more ...attribute.KeyValue) attribute.Set {
		return attribute.NewSet(append(append([]attribute.KeyValue{}, attrs...), more...)...)
	}
	add := func(set attribute.Set) []metric.AddOption {
		return []metric.AddOption{metric.WithAttributeSet(set)}
	}
	r := &recorder{
		in:       in,
		byOp:     map[Op][]metric.AddOption{},
		own:      []metric.RecordOption{metric.WithAttributeSet(with())},
		observed: metric.WithAttributeSet(with()),
	}
	for _, op := range []Op{OpPut, OpDelete, OpResync} {
		r.byOp[op] = add(with(attrOp.String(string(op))))
	}
	for c := range numCauses {
		r.byCause[c] = add(with(attrCause.String(c.String())))
	}
	r.byLeading[0] = add(with(attrLeading.Bool(false)))
	r.byLeading[1] = add(with(attrLeading.Bool(true)))
	return r
}

// instruments returns the instruments r records with, or nil.
func (r *recorder) instruments() *instruments {
	if r == nil {
		return nil
	}
	return r.in
}

// delivered counts n changes of op handed to the consumer.
func (r *recorder) delivered(op Op, n int64) {
	if r != nil && n > 0 {
		r.in.changes.Add(context.Background(), n, r.byOp[op]...)
	}
}

// listed counts a listing, for why.
func (r *recorder) listed(why cause) {
	if r != nil {
		r.in.listings.Add(context.Background(), 1, r.byCause[why]...)
	}
}

// registeredFor counts a registration, for why.
func (r *recorder) registeredFor(why cause) {
	if r != nil {
		r.in.registrations.Add(context.Background(), 1, r.byCause[why]...)
	}
}

// leadershipChanged counts a change of leadership to leading.
func (r *recorder) leadershipChanged(leading bool) {
	if r == nil {
		return
	}
	i := 0
	if leading {
		i = 1
	}
	r.in.leadershipChanges.Add(context.Background(), 1, r.byLeading[i]...)
}

// keepAliveAnswered records the round trip of an acknowledged keepalive.
func (r *recorder) keepAliveAnswered(roundTrip time.Duration) {
	if r != nil {
		r.in.keepAliveDuration.Record(context.Background(), roundTrip.Seconds(), r.own...)
	}
}

// observeGroup has the members and suspects gauges and the protections
// counter read the view view returns at each collection; the returned
// function stops it.
func (r *recorder) observeGroup(view func() *snapshot) func() {
	if r == nil {
		return func() {}
	}
	return r.observe(func(_ context.Context, o metric.Observer) error {
		s := view()
		o.ObserveInt64(r.in.members, int64(s.size()), r.observed)
		o.ObserveInt64(r.in.suspects, int64(s.suspects.size), r.observed)
		o.ObserveInt64(r.in.protections, s.protections, r.observed)
		return nil
	}, r.in.members, r.in.suspects, r.in.protections)
}

// observeRegistration has the leader and lease gauges read leading and
// leaseLeft at each collection; the returned function stops it.
func (r *recorder) observeRegistration(leading func() bool, leaseLeft func() time.Duration) func() {
	if r == nil {
		return func() {}
	}
	return r.observe(func(_ context.Context, o metric.Observer) error {
		leader := int64(0)
		if leading() {
			leader = 1
		}
		o.ObserveInt64(r.in.leader, leader, r.observed)
		o.ObserveFloat64(r.in.leaseRemaining, leaseLeft().Seconds(), r.observed)
		return nil
	}, r.in.leader, r.in.leaseRemaining)
}

// observe registers callback for gauges; the returned function
// unregisters it.
func (r *recorder) observe(callback metric.Callback, gauges ...metric.Observable) func() {
	reg, err := r.in.meter.RegisterCallback(callback, gauges...)
	if err != nil {
		return func() {}
	}
	return func() { _ = reg.Unregister() }
}
