// Options: what a user can set on a Watcher or a Register, the defaults, and
// the checks of the arguments every constructor shares.

package biregister

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"
)

// DefaultBufferSize is the default size of the Changes buffer: how many
// changes may wait for a consumer that falls behind.
const DefaultBufferSize = 10000

// listPageBytes is about the most one range response of a listing holds:
// each page asks for as many members as fit in it at the mean size read so
// far. etcd builds every response whole in memory, and the client decodes
// it whole, so a bound keeps both small whatever the group's size; pages
// much smaller would cost etcd more (see plan and readRange in listing.go).
const listPageBytes = 32 << 20

// probeTimes says when an idle Watcher checks its watch stream (probe.go).
type probeTimes struct {
	interval time.Duration // silence before a progress request; 0: never probe
	quiet    time.Duration // between checks where progress requests go unanswered
}

// defaultProbe is when an idle Watcher checks its watch stream (probe.go):
// after 5 s of silence, or, where progress requests go unanswered, every 10
// minutes, the interval of etcd's own progress notifications.
var defaultProbe = probeTimes{interval: 5 * time.Second, quiet: 10 * time.Minute}

// maxLeaseTTL is the longest lease etcd grants, in seconds (server
// lease/lessor.go, MaxLeaseTTL): a ttl beyond it could never be a lease.
const maxLeaseTTL = 9_000_000_000

// Option configures a Watcher or a Register.
type Option func(*config)

type config struct {
	ttl         time.Duration // the constructor's, checked
	client      *clientv3.Client
	lease       *Lease         // WithLease
	dialTimeout *time.Duration // nil: the ttl
	tls         *tls.Config
	username    string
	password    string
	logger      *slog.Logger
	bufferSize  int
	nameWait    time.Duration
	meters      metric.MeterProvider
	protection  Protection // as given; resolved by newConfig
	unprotected bool       // WithoutProtection
	guard       *guard     // made by newConfig; nil when unprotected
	// probe says when an idle Watcher checks its watch; only tests change it.
	probe probeTimes
}

// WithClient makes the Watcher or Register use an existing etcd client instead
// of creating one; many of them can share a client. The library never closes
// it. The endpoints passed to the constructor are then ignored, and
// WithTLS, WithAuth and WithDialTimeout, which shape a client the library
// makes, are refused with it (ErrInvalidArgument).
func WithClient(c *clientv3.Client) Option {
	return func(cfg *config) { cfg.client = c }
}

// WithLease puts the Register on l, a lease it shares with the other
// Registers on l (see Lease), instead of a lease of its own. The Register
// uses l's client (the endpoints passed to the constructor are then
// ignored, and a client given with WithClient must be l's), and its ttl
// must be l's. NewRegisterNoName refuses it: a name chosen from a revision
// could not be told from another Register's on the same lease; so does
// NewWatcher, which has no lease.
func WithLease(l *Lease) Option {
	return func(cfg *config) { cfg.lease = l }
}

// WithDialTimeout bounds how long the client waits to connect and to
// authenticate. The default is the constructor's ttl.
func WithDialTimeout(d time.Duration) Option {
	return func(cfg *config) { cfg.dialTimeout = &d }
}

// WithTLS connects to etcd over TLS with the given configuration.
func WithTLS(c *tls.Config) Option {
	return func(cfg *config) { cfg.tls = c }
}

// WithAuth authenticates to etcd as username with password; both must be
// non-empty. The password appears in no log and no error.
func WithAuth(username, password string) Option {
	return func(cfg *config) {
		cfg.username = username
		cfg.password = password
	}
}

// WithLogger sets the logger for the library's own events (re-registration,
// watch recovery, …). By default nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(cfg *config) { cfg.logger = l }
}

// WithBufferSize sets how many changes may wait for the consumer of Changes
// (default DefaultBufferSize). The room is taken only as the consumer falls
// behind. When it is full, changes are dropped and replaced by one OpResync
// change.
func WithBufferSize(n int) Option {
	return func(cfg *config) { cfg.bufferSize = n }
}

// WithNameWait makes NewRegister wait up to d for its name when a live
// member holds it, instead of failing at once with ErrNameTaken: a process
// that restarts under its own name (a StatefulSet pod, say) waits for the
// lease of its previous run to expire. It never takes over the key of a
// member that is alive: it registers only once that key is gone, and fails
// with ErrNameTaken if it is still there after d. The constructor may then
// take d + ttl. The new registration has a new create revision, so the
// fence of the previous one (Fence, Term.Fence) never holds for it.
func WithNameWait(d time.Duration) Option {
	return func(cfg *config) { cfg.nameWait = d }
}

// WithMeterProvider makes the Watcher or Register report its metrics
// through mp, an OpenTelemetry MeterProvider: the members of the group,
// leadership, changes delivered, listings and registrations by cause,
// keepalive round trips and the lease time left (README, Metrics). Without
// it, nothing is measured.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(cfg *config) { cfg.meters = mp }
}

// newConfig applies opts over the defaults and checks the arguments shared by
// every constructor.
func newConfig(endpoints []string, prefix string, ttl int64, opts []Option) (*config, string, error) {
	if ttl < 1 || ttl > maxLeaseTTL {
		return nil, "", fmt.Errorf("%w: ttl %d outside [1, %d]", ErrInvalidArgument, ttl, maxLeaseTTL)
	}
	cfg := &config{
		ttl:        time.Duration(ttl) * time.Second,
		bufferSize: DefaultBufferSize,
		probe:      defaultProbe,
	}
	for _, opt := range opts {
		if opt != nil {
			opt(cfg)
		}
	}
	if cfg.lease != nil {
		switch {
		case cfg.client != nil && cfg.client != cfg.lease.client:
			return nil, "", fmt.Errorf("%w: WithClient with another client than WithLease's", ErrInvalidArgument)
		case cfg.lease.ttl != cfg.ttl:
			return nil, "", fmt.Errorf("%w: ttl %d is not the Lease's, %d", ErrInvalidArgument, ttl, cfg.lease.ttl/time.Second)
		}
		cfg.client = cfg.lease.client
	}
	if cfg.client != nil && (cfg.tls != nil || cfg.username != "" || cfg.password != "" || cfg.dialTimeout != nil) {
		// Options that shape a client the library makes would be dropped
		// without a word: the given client has its own.
		return nil, "", fmt.Errorf("%w: WithClient or WithLease with WithTLS, WithAuth or WithDialTimeout: the given client has its own", ErrInvalidArgument)
	}
	if prefix == "" {
		return nil, "", fmt.Errorf("%w: empty prefix", ErrInvalidArgument)
	}
	if cfg.client == nil {
		if len(endpoints) == 0 {
			return nil, "", fmt.Errorf("%w: no etcd endpoints", ErrInvalidArgument)
		}
		for _, ep := range endpoints {
			if strings.TrimSpace(ep) == "" {
				return nil, "", fmt.Errorf("%w: empty etcd endpoint", ErrInvalidArgument)
			}
		}
		// The etcd client ignores credentials that lack either part, and
		// connects without any; etcd would then refuse every request with
		// "user name is empty", or, without auth, accept them all.
		if (cfg.username == "") != (cfg.password == "") {
			return nil, "", fmt.Errorf("%w: WithAuth needs both a user name and a password", ErrInvalidArgument)
		}
	}
	if cfg.dialTimeout != nil && *cfg.dialTimeout <= 0 {
		return nil, "", fmt.Errorf("%w: dial timeout %v", ErrInvalidArgument, *cfg.dialTimeout)
	}
	if cfg.nameWait < 0 {
		return nil, "", fmt.Errorf("%w: name wait %v < 0", ErrInvalidArgument, cfg.nameWait)
	}
	if cfg.bufferSize < 1 {
		return nil, "", fmt.Errorf("%w: buffer size %d < 1", ErrInvalidArgument, cfg.bufferSize)
	}
	if !cfg.unprotected {
		p, err := cfg.protection.resolve(cfg.ttl)
		if err != nil {
			return nil, "", err
		}
		cfg.guard = newGuard(p)
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return cfg, prefix, nil
}
