// Package metertest gives tests a real OpenTelemetry SDK MeterProvider whose
// measurements they collect when they like, and read by name and
// attributes.
package metertest

import (
	"context"
	"iter"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Meters is an SDK MeterProvider read by a ManualReader.
type Meters struct {
	Provider *sdkmetric.MeterProvider
	reader   *sdkmetric.ManualReader
}

// New returns Meters that t.Cleanup shuts down.
func New(t testing.TB) *Meters {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	m := &Meters{Provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), reader: reader}
	t.Cleanup(func() { _ = m.Provider.Shutdown(context.Background()) })
	return m
}

// Collect returns one collection of everything measured.
func (m *Meters) Collect(t testing.TB) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("metertest: collect: %v", err)
	}
	return rm
}

// Value returns, from one collection, the sum of the data points of the
// integer counter or gauge name whose attributes include attrs; 0 if there
// is none.
func (m *Meters) Value(t testing.TB, name string, attrs ...attribute.KeyValue) int64 {
	t.Helper()
	return Value(m.Collect(t), name, attrs...)
}

// Value returns, from rm, the sum of the data points of the integer counter
// or gauge name whose attributes include attrs; 0 if there is none.
func Value(rm metricdata.ResourceMetrics, name string, attrs ...attribute.KeyValue) int64 {
	var sum int64
	for data := range named(rm, name) {
		switch data := data.(type) {
		case metricdata.Sum[int64]:
			sum += sumOf(data.DataPoints, attrs)
		case metricdata.Gauge[int64]:
			sum += sumOf(data.DataPoints, attrs)
		}
	}
	return sum
}

// Count returns, from one collection, how many values the float histogram
// name recorded at the data points whose attributes include attrs.
func (m *Meters) Count(t testing.TB, name string, attrs ...attribute.KeyValue) uint64 {
	t.Helper()
	var n uint64
	for data := range named(m.Collect(t), name) {
		if h, ok := data.(metricdata.Histogram[float64]); ok {
			for _, p := range h.DataPoints {
				if has(p.Attributes, attrs) {
					n += p.Count
				}
			}
		}
	}
	return n
}

// Float returns, from one collection, the sum of the data points of the
// float gauge name whose attributes include attrs.
func (m *Meters) Float(t testing.TB, name string, attrs ...attribute.KeyValue) float64 {
	t.Helper()
	var sum float64
	for data := range named(m.Collect(t), name) {
		if g, ok := data.(metricdata.Gauge[float64]); ok {
			sum += sumOf(g.DataPoints, attrs)
		}
	}
	return sum
}

// named yields the data of every metric of rm called name.
func named(rm metricdata.ResourceMetrics, name string) iter.Seq[metricdata.Aggregation] {
	return func(yield func(metricdata.Aggregation) bool) {
		for _, scope := range rm.ScopeMetrics {
			for _, metric := range scope.Metrics {
				if metric.Name == name && !yield(metric.Data) {
					return
				}
			}
		}
	}
}

// sumOf returns the sum of the points whose attributes include attrs.
func sumOf[N int64 | float64](points []metricdata.DataPoint[N], attrs []attribute.KeyValue) N {
	var sum N
	for _, p := range points {
		if has(p.Attributes, attrs) {
			sum += p.Value
		}
	}
	return sum
}

func has(set attribute.Set, attrs []attribute.KeyValue) bool {
	for _, a := range attrs {
		if v, ok := set.Value(a.Key); !ok || v != a.Value {
			return false
		}
	}
	return true
}
