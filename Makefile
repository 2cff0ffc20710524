# Every target needs only Go: the tests and the demo start etcd in-process.
GO ?= go
PKGS := ./...
# Pinned, fetched through the module proxy on first use.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: test bench lint demo cluster-demo

## test: the whole suite, race detector on, against real embedded etcd.
test:
	$(GO) test -race -count=1 $(PKGS)

## bench: the benchmarks (see BENCHMARKS.md).
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## lint: go vet, gofmt and staticcheck.
lint:
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) run $(STATICCHECK) $(PKGS)

## demo: one service registering itself on an in-process etcd.
demo:
	$(GO) run ./examples/service

## cluster-demo: three members in one process, with a leader failover.
cluster-demo:
	$(GO) run ./examples/failover
