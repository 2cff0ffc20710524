// The etcd client: the one the library makes when the user gives none, and
// who closes it.

package biregister

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
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
	interceptors := []grpc.UnaryClientInterceptor{keepConnectionError}
	var dialOptions []grpc.DialOption
	var login *tokenLogin
	if cfg.username != "" {
		// The library logs in, not the etcd client: see tokenLogin.
		login = &tokenLogin{user: cfg.username, password: cfg.password, timeout: dialTimeout}
		interceptors = append([]grpc.UnaryClientInterceptor{login.renew}, interceptors...)
		dialOptions = append(dialOptions, grpc.WithPerRPCCredentials(login), grpc.WithChainStreamInterceptor(login.renewOnStream))
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: dialTimeout,
		TLS:         cfg.tls,
		// The client's default zap logger writes retries to stderr; the library
		// reports what matters through cfg.logger instead.
		Logger: zap.NewNop(),
		// gRPC pings an idle connection after this long (10 s is its floor) and
		// drops it when the ping goes unanswered, so a silently stalled
		// connection is replaced instead of hanging every stream on it.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: dialTimeout,
		DialOptions: append(dialOptions,
			grpc.WithConnectParams(grpc.ConnectParams{
				// gRPC's default reconnect backoff grows to 2 minutes; after an
				// outage the library must be back within about a second.
				Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: dialTimeout,
			}),
			grpc.WithChainUnaryInterceptor(interceptors...),
		),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("biregister: connect to etcd: %w", err)
	}
	if login != nil {
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		err := login.login(ctx, c.ActiveConnection())
		cancel()
		if err != nil {
			c.Close()
			return nil, nil, fmt.Errorf("biregister: connect to etcd: %w", err)
		}
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

// authenticateMethod is the gRPC method that logs in.
const authenticateMethod = "/etcdserverpb.Auth/Authenticate"

// tokenLogin holds the auth token of a client the library makes with
// WithAuth, and logs in again when etcd refuses it. The etcd client would do
// both, given the user and password, but it sends its token with every
// request, its logins included. etcd 3.4 checks the token of a login too
// (3.5 no longer does, etcd-io/etcd#12165): once the token has expired (a
// simple token unused for --auth-token-ttl, a JWT past its ttl) or a restart
// forgot it, every login is refused as "invalid auth token", and the client,
// which logs in again on that very error, recurses until the request's
// deadline, or for good when it opens a stream. A login here carries no
// token.
//
// A stream etcd refuses for its token (a LeaseKeepAlive stream on etcd 3.7,
// which checks the token of a renewal) fails, and makes it log in, so that
// the stream opened after it carries a new token; a watch created with a
// refused token fails too, and the Watcher lists the group again, with a
// request that logs in.
type tokenLogin struct {
	// Set when made; never change.
	user, password string
	timeout        time.Duration // bounds a login that a stream's refusal asks for

	// Written by login, read by every request: a string, "" for none.
	token atomic.Value
}

// GetRequestMetadata attaches the token to every request but Authenticate.
func (l *tokenLogin) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	token := l.current()
	if info, ok := credentials.RequestInfoFromContext(ctx); token == "" || (ok && info.Method == authenticateMethod) {
		return nil, nil
	}
	return map[string]string{rpctypes.TokenFieldNameGRPC: token}, nil
}

// RequireTransportSecurity allows plain connections, as the etcd client does.
func (l *tokenLogin) RequireTransportSecurity() bool { return false }

// current returns the token requests carry, "" for none.
func (l *tokenLogin) current() string {
	token, _ := l.token.Load().(string)
	return token
}

// login logs in over cc and keeps the token. An etcd without auth enabled
// gives none, and requests go without one, as with the etcd client.
func (l *tokenLogin) login(ctx context.Context, cc *grpc.ClientConn) error {
	resp, err := pb.NewAuthClient(cc).Authenticate(ctx, &pb.AuthenticateRequest{Name: l.user, Password: l.password}, grpc.WaitForReady(true))
	switch {
	case err == nil:
		l.token.Store(resp.Token)
	case errors.Is(rpctypes.Error(err), rpctypes.ErrAuthNotEnabled):
		l.token.Store("")
	default:
		return clientv3.ContextError(ctx, err)
	}
	return nil
}

// renew is the interceptor that, when etcd refuses a request's token, logs
// in again and repeats the request once. etcd refuses a token before it
// executes anything, so the request is safe to repeat.
func (l *tokenLogin) renew(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	// A login, which carries no token, never logs in again.
	if method == authenticateMethod || !tokenRefused(err) {
		return err
	}
	if err := l.login(ctx, cc); err != nil {
		return err
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// renewOnStream is the stream interceptor that logs in again when etcd
// refuses a stream's token: the stream fails, and the next one its user
// opens carries the new token.
func (l *tokenLogin) renewOnStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		l.loginIfRefused(err, cc)
		return nil, err
	}
	return &loginStream{ClientStream: s, login: l, cc: cc}, nil
}

// loginStream is a stream whose refused token makes its tokenLogin log in.
type loginStream struct {
	grpc.ClientStream
	login *tokenLogin
	cc    *grpc.ClientConn
}

func (s *loginStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	s.login.loginIfRefused(err, s.cc)
	return err
}

// loginIfRefused logs in again if err is etcd refusing a token.
func (l *tokenLogin) loginIfRefused(err error, cc *grpc.ClientConn) {
	if !tokenRefused(err) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	_ = l.login(ctx, cc)
}

// tokenRefused reports whether etcd refused a request for its token: unknown
// or expired, issued before a change of users or roles, or missing.
func tokenRefused(err error) bool {
	err = rpctypes.Error(err)
	return errors.Is(err, rpctypes.ErrInvalidAuthToken) || errors.Is(err, rpctypes.ErrAuthOldRevision) || errors.Is(err, rpctypes.ErrUserEmpty)
}
