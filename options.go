package biregister

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultBufferSize is the default capacity of the Changes channel.
const DefaultBufferSize = 10000

// Option configures a Watcher or a Register.
type Option func(*config)

type config struct {
	client      *clientv3.Client
	dialTimeout time.Duration
	tls         *tls.Config
	username    string
	password    string
	logger      *slog.Logger
	bufferSize  int
	// probeInterval is how often an idle Watcher checks its watch; only
	// tests change it.
	probeInterval time.Duration
}

// WithClient makes the Watcher or Register use an existing etcd client instead
// of creating one; many of them can share a client. The library never closes
// it. The endpoints passed to the constructor are then ignored.
func WithClient(c *clientv3.Client) Option {
	return func(cfg *config) { cfg.client = c }
}

// WithDialTimeout bounds how long the client waits to connect and to
// authenticate. The default is the constructor's ttl.
func WithDialTimeout(d time.Duration) Option {
	return func(cfg *config) { cfg.dialTimeout = d }
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

// WithBufferSize sets the capacity of the Changes channel (default
// DefaultBufferSize). When it is full, changes are dropped and replaced by one
// OpResync change.
func WithBufferSize(n int) Option {
	return func(cfg *config) { cfg.bufferSize = n }
}

// newConfig applies opts over the defaults and checks the arguments shared by
// every constructor.
func newConfig(endpoints []string, prefix string, ttl int64, opts []Option) (*config, string, error) {
	cfg := &config{
		dialTimeout:   time.Duration(ttl) * time.Second,
		bufferSize:    DefaultBufferSize,
		probeInterval: probeInterval,
	}
	for _, opt := range opts {
		if opt != nil {
			opt(cfg)
		}
	}
	if ttl < 1 {
		return nil, "", fmt.Errorf("%w: ttl %d < 1", ErrInvalidArgument, ttl)
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
	if cfg.dialTimeout <= 0 {
		return nil, "", fmt.Errorf("%w: dial timeout %v", ErrInvalidArgument, cfg.dialTimeout)
	}
	if cfg.bufferSize < 1 {
		return nil, "", fmt.Errorf("%w: buffer size %d < 1", ErrInvalidArgument, cfg.bufferSize)
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return cfg, prefix, nil
}

// newClient returns the client to use and whether the library owns it.
func (cfg *config) newClient(endpoints []string) (*clientv3.Client, bool, error) {
	if cfg.client != nil {
		return cfg.client, false, nil
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: cfg.dialTimeout,
		TLS:         cfg.tls,
		Username:    cfg.username,
		Password:    cfg.password,
		// The client's default zap logger writes retries to stderr; the library
		// reports what matters through cfg.logger instead.
		Logger: zap.NewNop(),
		// gRPC pings an idle connection after this long (10 s is its floor) and
		// drops it when the ping goes unanswered, so a silently stalled
		// connection is replaced instead of hanging every stream on it.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: cfg.dialTimeout,
		DialOptions: []grpc.DialOption{
			grpc.WithConnectParams(grpc.ConnectParams{
				// gRPC's default reconnect backoff grows to 2 minutes; after an
				// outage the library must be back within about a second.
				Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: cfg.dialTimeout,
			}),
			grpc.WithChainUnaryInterceptor(keepConnectionError),
		},
	})
	if err != nil {
		return nil, false, fmt.Errorf("biregister: connect to etcd: %w", err)
	}
	return c, true, nil
}

// keepConnectionError keeps the reason why a request found no connection in
// the error it returns. gRPC dials lazily and a request waits for a
// connection until its context ends; gRPC then says why it had none ("…
// authentication handshake failed: tls: failed to verify certificate: x509:
// …"), but the etcd client replaces every error of a request whose context
// ended by the bare ctx.Err(). A TLS mistake would read "context deadline
// exceeded". This interceptor runs inside the etcd client's own, on clients
// the library creates, and turns such an error into ctx.Err() annotated with
// gRPC's explanation: errors.Is(err, context.DeadlineExceeded) still holds,
// and the etcd client, which sees no gRPC status in it, neither retries it
// nor strips it.
func keepConnectionError(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if err == nil || ctx.Err() == nil {
		return err
	}
	st, ok := status.FromError(err)
	if !ok || (st.Code() != codes.DeadlineExceeded && st.Code() != codes.Canceled) || st.Message() == ctx.Err().Error() {
		return err
	}
	return fmt.Errorf("%w: %s", ctx.Err(), st.Message())
}
