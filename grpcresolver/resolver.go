package grpcresolver

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"google.golang.org/grpc/resolver"

	"github.com/biregister/biregister"
)

var (
	// errNoMembers is reported while no member has a usable address.
	errNoMembers = errors.New("grpcresolver: the group has no member with a usable address")
	// errWatcherClosed is reported when the Watcher closes under a resolver.
	errWatcherClosed = fmt.Errorf("grpcresolver: watcher of the group: %w", biregister.ErrClosed)
)

// watchResolver follows a Watcher's group for one gRPC client.
type watchResolver struct {
	w         biregister.Watcher
	g         *group // the Builder's, shared with its other resolvers
	cc        resolver.ClientConn
	logger    *slog.Logger
	stop      chan struct{} // closed by Close
	done      chan struct{} // closed when run has returned
	closeOnce sync.Once

	// Owned by run.
	pushed *list // the last list given to gRPC; nil before the first
	empty  bool  // errNoMembers was reported after the last list
}

// run pushes the group to gRPC whenever it changes, until Close or until
// the Watcher closes.
func (r *watchResolver) run() {
	defer close(r.done)
	for {
		s := r.g.current()
		// A closed Watcher reads as an empty group: it is reported as closed
		// instead. It publishes that empty group just before Closed, so
		// update may see it first, which only reports an error too.
		if s.view.Len() == 0 && r.reportIfClosed(s) {
			return
		}
		r.update(s)
		select {
		case <-s.view.Updated():
		case <-r.w.Closed():
			r.reportIfClosed(s)
			return
		case <-r.stop:
			return
		}
	}
}

// reportIfClosed reports whether the Watcher is closed, and if so tells gRPC,
// which keeps the last addresses.
func (r *watchResolver) reportIfClosed(s state) bool {
	select {
	case <-r.w.Closed():
	default:
		return false
	}
	r.adoptLast(s)
	r.logger.Warn("grpcresolver: watcher closed, keeping the last addresses")
	r.cc.ReportError(errWatcherClosed)
	return true
}

// update gives gRPC the group's endpoints if they changed. It never gives
// it an empty list: see the package documentation.
func (r *watchResolver) update(s state) {
	if s.served.len() == 0 {
		if !r.empty {
			r.empty = true
			r.adoptLast(s)
			r.logger.Warn("grpcresolver: no member with a usable address, keeping the last addresses", "members", s.view.Len())
			r.cc.ReportError(errNoMembers)
		}
		return
	}
	// Progress notifications and other keys' events publish views too;
	// gRPC hears only of real changes. After an error it hears the list
	// again, though it would still use the old one.
	if !r.empty && r.pushed == s.served {
		return
	}
	r.empty = false
	r.push(s.served)
}

// adoptLast gives gRPC the last list the Builder's resolvers served if
// this one has given it none: gRPC closes the resolver of a channel that
// goes idle and builds a new one when it wakes, which must not forget the
// servers the channel knew.
func (r *watchResolver) adoptLast(s state) {
	if r.pushed == nil && s.last != nil {
		r.push(s.last)
	}
}

func (r *watchResolver) push(l *list) {
	r.pushed = l
	// An error asks a polling resolver to poll again; this one hears of
	// every change anyway.
	if err := r.cc.UpdateState(l.resolverState()); err != nil {
		r.logger.Debug("grpcresolver: gRPC rejected the addresses", "err", err)
	}
}

// ResolveNow does nothing: the Watcher's cache is always current.
func (r *watchResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close stops following the group and waits until the goroutine is gone.
func (r *watchResolver) Close() {
	r.closeOnce.Do(func() { close(r.stop) })
	<-r.done
}
