package grpcresolver

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/grpc/resolver"

	"github.com/biregister/biregister"
)

// Scheme is the URI scheme of the targets a Builder resolves, as in
// "biregister:///services/api".
const Scheme = "biregister"

// Option configures a Builder.
type Option func(*builder)

// WithLogger sets the logger for the resolver's own events: a member whose
// value is not an address, the group turning empty, the Watcher closing. By
// default nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(b *builder) {
		if l != nil {
			b.logger = l
		}
	}
}

// NewBuilder returns a resolver.Builder for Scheme that resolves a target to
// the members of w's group. Pass it to grpc.NewClient with grpc.WithResolvers.
//
// One Builder serves any number of clients; each gets a resolver with one
// goroutine, which follows w until the client closes it or w closes. The
// resolvers only read w's views and never take anything from w.Changes,
// which stays the caller's. They share their work and the last list they
// served, which a resolver built while the group reads empty starts from
// (see the package documentation): give the clients of one Watcher one
// Builder. Close w after the clients that use it.
func NewBuilder(w biregister.Watcher, opts ...Option) resolver.Builder {
	b := &builder{w: w, logger: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		if opt != nil {
			opt(b)
		}
	}
	b.group = &group{w: w, logger: b.logger, served: new(list)}
	return b
}

// builder is set up by NewBuilder and never changes after.
type builder struct {
	w      biregister.Watcher
	logger *slog.Logger
	group  *group // shared by the resolvers it builds
}

func (b *builder) Scheme() string { return Scheme }

// Build starts a resolver for target that pushes the group to cc.
func (b *builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	if b.w == nil {
		return nil, errors.New("grpcresolver: NewBuilder was given no Watcher")
	}
	if err := b.checkTarget(target); err != nil {
		return nil, err
	}
	r := &watchResolver{
		w:      b.w,
		g:      b.group,
		cc:     cc,
		logger: b.logger.With("target", target.String()),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go r.run()
	return r, nil
}

// checkTarget rejects a target that names another group than the Watcher
// follows. The path of a URL always starts with "/" whatever the prefix does,
// so slashes at either end are not compared; an empty path means the
// Watcher's group.
func (b *builder) checkTarget(target resolver.Target) error {
	path := strings.Trim(target.Endpoint(), "/")
	if path == "" {
		return nil
	}
	if prefix := strings.Trim(b.w.Prefix(), "/"); path != prefix {
		return fmt.Errorf("grpcresolver: target %q names group %q, but the Watcher follows %q",
			target.String(), path, b.w.Prefix())
	}
	return nil
}
