// The etcd client: the one the library makes when the user gives none, and
// who closes it.

package biregister

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// connection is what every constructor starts from: the checked
// configuration, the group's prefix with its trailing '/', and the client
// with the function that releases it (see newClient).
type connection struct {
	cfg     *config
	prefix  string
	client  *clientv3.Client
	release func()
}

// connect checks the arguments every constructor shares and connects.
func connect(endpoints []string, prefix string, ttl int64, opts []Option) (connection, error) {
	cfg, prefix, err := newConfig(endpoints, prefix, ttl, opts)
	if err != nil {
		return connection{}, err
	}
	client, release, err := cfg.newClient(endpoints)
	if err != nil {
		return connection{}, err
	}
	return connection{cfg: cfg, prefix: prefix, client: client, release: release}, nil
}

// newClient returns the client to use and the function that releases it when
// its user closes: that closes a client the library made, and leaves one given
// with WithClient alone, so the decision is taken here, once.
func (cfg *config) newClient(endpoints []string) (*clientv3.Client, func(), error) {
	if cfg.client != nil {
		return cfg.client, func() {}, nil
	}
	dialTimeout := cfg.ttl
	if cfg.dialTimeout != nil {
		dialTimeout = *cfg.dialTimeout
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: dialTimeout,
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
		DialKeepAliveTimeout: dialTimeout,
		DialOptions: []grpc.DialOption{
			grpc.WithConnectParams(grpc.ConnectParams{
				// gRPC's default reconnect backoff grows to 2 minutes; after an
				// outage the library must be back within about a second.
				Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: dialTimeout,
			}),
			grpc.WithChainUnaryInterceptor(keepConnectionError),
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("biregister: connect to etcd: %w", err)
	}
	return c, func() { c.Close() }, nil
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
