package biregister_test

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprometheus "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/biregister/biregister"
)

// WithMeterProvider reports a Register's metrics through OpenTelemetry; here
// they are served to Prometheus, as /metrics of the service, next to a
// readiness probe for Kubernetes.
func ExampleWithMeterProvider() {
	registry := prometheus.NewRegistry()
	exporter, err := otelprometheus.New(otelprometheus.WithRegisterer(registry))
	if err != nil {
		fmt.Println(err)
		return
	}
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))

	reg, err := biregister.NewRegister(etcdEndpoints, "/example/metered/", "node-1", "10.0.0.1:8080", 5,
		biregister.WithMeterProvider(meters))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	// The pod's readiness: serving until the Register closes, whatever etcd
	// does. ReadyHandler would say whether the registry itself can be
	// relied on, which is for work that needs it (see README, Probes).
	mux.Handle("/ready", biregister.ServingHandler(reg))
	srv := httptest.NewServer(mux) // in a service: http.ListenAndServe(":9090", mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		line := lines.Text()
		for _, name := range []string{"biregister_leader{", "biregister_members{", "biregister_registrations_total{"} {
			if strings.HasPrefix(line, name) {
				fmt.Println(name[:len(name)-1], line[strings.LastIndex(line, " ")+1:])
			}
		}
	}
	ready, err := http.Get(srv.URL + "/ready")
	if err != nil {
		fmt.Println(err)
		return
	}
	ready.Body.Close()
	fmt.Println("ready:", ready.StatusCode)
	// Unordered output:
	// biregister_leader 1
	// biregister_members 1
	// biregister_registrations_total 1
	// ready: 200
}
