# Every target but test-etcd34 needs only Go: the tests and the demo start
# etcd in-process.
GO ?= go
PKGS := ./...
# Pinned, fetched through the module proxy on first use.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# The newest etcd release line that users' modules may pick for us (Go's
# minimal version selection): compat runs the whole suite against it. The
# server modules move with the client, since etcd's server of one line does
# not build against the API module of another.
COMPAT_ETCD := v3.7.3
COMPAT_MODULES := go.etcd.io/etcd/api/v3 go.etcd.io/etcd/client/pkg/v3 \
	go.etcd.io/etcd/client/v3 go.etcd.io/etcd/pkg/v3 go.etcd.io/etcd/server/v3
# An etcd 3.4 server binary, as Debian's etcd-server package installs it.
ETCD34_BIN ?= /usr/bin/etcd

# How long make fuzz runs each fuzz target, and how long it may spend
# shrinking each new input it finds (a count: the listing and the command
# fuzz a real etcd, whose instrumented code makes most inputs new).
FUZZTIME ?= 60s
FUZZMINIMIZETIME ?= 10x
# package:target, one go test run each (go test fuzzes one target a run).
FUZZ_TARGETS := .:FuzzCache .:FuzzListingPages \
	./grpcresolver:FuzzParseEndpoint ./grpcresolver:FuzzEndpointString \
	./grpcresolver:FuzzResolverUpdate ./cmd/biregister:FuzzArgs

.PHONY: gomin test test-etcd34 compat compat-build compat-test stress fuzz bench lint demo cluster-demo

## gomin: builds what users import and install — the library, grpcresolver
## and the command — with the Go release go.mod's go line names, fetched
## through the module proxy as a toolchain: the oldest Go we say we support
## builds us. (make lint's vet already holds the tests to that line's
## standard library; building them here would compile etcd's server too.)
gomin:
	@min=go$$($(GO) list -m -f '{{.GoVersion}}'); \
	echo "gomin: $$min"; \
	GOTOOLCHAIN=$$min $(GO) build . ./grpcresolver ./cmd/biregister

## test: the whole suite, race detector on, against real embedded etcd; the
## root package's tests in seven processes side by side (scripts/gotest).
test:
	GO=$(GO) scripts/gotest $(PKGS)

## test-etcd34: the root package against a real etcd 3.4 server process.
test-etcd34:
	@version=$$($(ETCD34_BIN) --version 2>/dev/null | sed -n 's/^etcd Version: //p'); \
	case "$$version" in \
	3.4.*) echo "etcd server $$version at $(ETCD34_BIN)";; \
	*) echo "test-etcd34: $(ETCD34_BIN) is not an etcd 3.4 server (version '$$version'); install Debian's etcd-server or set ETCD34_BIN" >&2; exit 1;; \
	esac
	BIREGISTER_ETCD_BIN=$(ETCD34_BIN) BIREGISTER_REQUIRE_NETNS=1 GO=$(GO) scripts/gotest .

## compat: go vet and the whole suite with etcd $(COMPAT_ETCD), in a copy of
## the tree: compat-build, then compat-test.
compat: compat-build compat-test

# Where compat-build makes the copy and compat-test runs it, then removes it.
COMPAT_DIR ?= $(or $(TMPDIR),/tmp)/biregister-compat

## compat-build: copies the tree to COMPAT_DIR, moves it to etcd
## $(COMPAT_ETCD), runs go vet and builds every test binary under the race
## detector (running none), so that compat-test finds them built. CI runs
## it beside test-etcd34, whose tests mostly wait for etcd.
compat-build:
	@set -e; \
	rm -rf "$(COMPAT_DIR)"; mkdir -p "$(COMPAT_DIR)"; \
	tar -cf - --exclude=./.git . | tar -xf - -C "$(COMPAT_DIR)"; \
	cd "$(COMPAT_DIR)"; \
	if ! $(GO) get $(addsuffix @$(COMPAT_ETCD),$(COMPAT_MODULES)); then \
		echo "compat: cannot get etcd $(COMPAT_ETCD) (it needs Go 1.26; this is $$($(GO) env GOVERSION))" >&2; exit 1; \
	fi; \
	$(GO) mod tidy; \
	got=$$($(GO) list -m -f '{{.Version}}' go.etcd.io/etcd/client/v3); \
	if [ "$$got" != "$(COMPAT_ETCD)" ]; then echo "compat: client is $$got, want $(COMPAT_ETCD)" >&2; exit 1; fi; \
	echo "compat: etcd client and server $$got"; \
	$(GO) vet $(PKGS); \
	$(GO) test -race -count=1 -run '^$$' -exec true $(PKGS) >/dev/null

## compat-test: the whole suite in COMPAT_DIR, as compat-build left it.
compat-test:
	@set -e; trap 'rm -rf "$(COMPAT_DIR)"' EXIT; \
	cd "$(COMPAT_DIR)"; \
	GO=$(GO) scripts/gotest $(PKGS)

## stress: the tests that guard a guarantee by timing, many times over
## (BIREGISTER_STRESS=1): a leader's term ends before its successor's
## begins, 20 stalls in a row; 10,000 terms ended by Resign leave nothing.
stress:
	BIREGISTER_STRESS=1 $(GO) test -race -count=1 -timeout 30m -v \
		-run 'TestTermEndsBeforeSuccessorBegins|TestTermsLeaveNothingBehind|TestCloseLeavesNoLease' .
	BIREGISTER_STRESS=1 $(GO) test -race -count=10 -timeout 30m \
		-run 'TestResignUnansweredNeverTwoLeaders|TestResignWithItsOwnTerm|TestRefusedResignWakesWaiters|TestResignThenEtcdReplaced|TestFenceTakenAtTheDecision|TestFenceOfTermAcrossReplacedEtcd|TestLeadershipReadsOneRegistration|TestLeadShutdownRace|TestLeadershipLoggedAndCounted' .

## fuzz: every fuzz target for FUZZTIME, one after the other; a failing
## input is written to the package's testdata/fuzz/<target>/, where make
## test runs it from then on. Ends with each target's executions.
fuzz:
	@set -e; log=$$(mktemp); trap 'rm -f "$$log" "$$log.sum"' EXIT; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t#*:}; \
		echo "=== $$name ($$pkg), $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) \
			-fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg > "$$log" 2>&1 || { cat "$$log"; exit 1; }; \
		tail -3 "$$log"; \
		echo "$$name: $$(grep -o 'execs: [0-9]*' "$$log" | tail -1 | cut -d' ' -f2) executions, no failure" >> "$$log.sum"; \
	done; \
	echo "=== make fuzz, $(FUZZTIME) each"; cat "$$log.sum"

## bench: the benchmarks (see BENCHMARKS.md).
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## lint: go vet (with its stdversion check: no standard library newer than
## go.mod's go line), gofmt, staticcheck, and README's Go row against go.mod.
lint:
	$(GO) vet $(PKGS)
	@want=$$($(GO) list -m -f '{{.GoVersion}}' | cut -d. -f1,2); \
	grep -q "^| Go | $$want or newer " README.md || { echo "README's Versions row for Go does not say $$want, go.mod's go line" >&2; exit 1; }
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@# What only tests and examples use stays out of what users build.
	@heavy=$$($(GO) list -deps . ./grpcresolver ./cmd/biregister | grep -E '^(go.etcd.io/etcd/server|github.com/prometheus|github.com/stretchr/testify|go.uber.org/goleak|go.opentelemetry.io/otel/sdk)' || true); \
	if [ -n "$$heavy" ]; then echo "the library builds test-only modules in:"; echo "$$heavy"; exit 1; fi
	$(GO) run $(STATICCHECK) $(PKGS)

## demo: one service registering itself on an in-process etcd.
demo:
	$(GO) run ./examples/service

## cluster-demo: three members in one process, with a leader failover.
cluster-demo:
	$(GO) run ./examples/failover
