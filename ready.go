// Readiness: whether a Watcher or a Register can be relied on now, as a
// plain function and as an http.Handler for Kubernetes probes.

package biregister

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// ErrNotReady is what the error of Ready wraps: the Watcher or Register
// cannot be relied on now, for the reason the error gives.
var ErrNotReady = errors.New("biregister: not ready")

// Ready returns nil while the cache is known to be current: its watch is up
// and etcd confirmed the stream within the bound README states (two probe
// intervals plus ttl, 15 s with the defaults and ttl 5 s; where progress
// requests go unanswered, the quiet interval more). Otherwise it returns an
// error that wraps ErrNotReady and says why.
func (w *watcher) Ready() error {
	if w.current() {
		return nil
	}
	select {
	case <-w.done:
		return fmt.Errorf("%w: closed", ErrNotReady)
	default:
	}
	if !w.following.Load() {
		return fmt.Errorf("%w: listing the group again", ErrNotReady)
	}
	return fmt.Errorf("%w: etcd has not confirmed the watch for %v", ErrNotReady, w.silence().Round(time.Millisecond))
}

// Ready returns nil while the Register is registered and its lease is
// certainly alive — the deadline AmILeader counts with, from the send of
// the last acknowledged keepalive: during a silent cut it cannot know more.
// Otherwise it returns an error that wraps ErrNotReady and says why.
func (r *register) Ready() error {
	reg := r.current.Load()
	switch {
	case r.closing.Load():
		return fmt.Errorf("%w: closed", ErrNotReady)
	case reg == nil:
		return fmt.Errorf("%w: registering again since %v", ErrNotReady, time.Since(r.registeredSince()).Round(time.Millisecond))
	case !reg.clock.alive():
		return fmt.Errorf("%w: lease not certainly alive: no keepalive acknowledged in time", ErrNotReady)
	}
	return nil
}

// ReadyHandler returns an http.Handler for probes of w, a Watcher or a
// Register: it answers 200 "ready" while w.Ready() returns nil, and 503 with
// the reason otherwise. It says whether what w knows of the group can be
// relied on now: during an etcd outage every replica turns not ready
// together, so it is a probe for work that needs the registry (leader-only
// work, a gateway's routing), not a Kubernetes readiness probe of a server
// that clients reach without it, and never a liveness probe, which would
// restart every pod in a registry outage. See ServingHandler.
func ReadyHandler(w Watcher) http.Handler {
	return probeHandler(func() error { return w.Ready() }, "ready")
}

// ServingHandler returns an http.Handler for the readiness probe of a
// server that w, its Register, registers: it answers 200 "serving" until w
// closes, and 503 once it has, so that Kubernetes stops routing to the pod
// when it leaves the group, while an etcd outage, which its clients ride
// out on the addresses they know, changes nothing. It is not a liveness
// probe either: nothing the registry does means the process should restart.
func ServingHandler(w Watcher) http.Handler {
	return probeHandler(func() error {
		select {
		case <-w.Closed():
			return fmt.Errorf("%w: closed", ErrNotReady)
		default:
			return nil
		}
	}, "serving")
}

// probeHandler answers 200 with ok while check returns nil, 503 with its
// error otherwise.
func probeHandler(check func() error, ok string) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rw.Header().Set("Cache-Control", "no-store")
		if err := check(); err != nil {
			rw.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(rw, err)
			return
		}
		fmt.Fprintln(rw, ok)
	})
}
