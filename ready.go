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

// ReadyHandler returns an http.Handler for readiness probes of w, a Watcher
// or a Register: it answers 200 "ready" while w.Ready() returns nil, and
// 503 with the reason otherwise.
func ReadyHandler(w Watcher) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rw.Header().Set("Cache-Control", "no-store")
		if err := w.Ready(); err != nil {
			rw.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(rw, err)
			return
		}
		fmt.Fprintln(rw, "ready")
	})
}
