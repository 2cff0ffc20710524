// Mass-loss protection: when most of a group is lost at once, and not by
// graceful leaves, the members lost are held as suspects for a bounded
// time, so that clients keep calling servers that may well be alive.

package biregister

import (
	"fmt"
	"math"
	"time"
)

// Protection tunes mass-loss protection (README, Mass loss). A loss is a
// member gone without a graceful leave (Change.Left false): its lease
// expired or was revoked, or its key was deleted from outside. A zero field
// takes its default.
//
// Every loss in a group of at least MinMembers is held as a suspect for
// Settle, long enough to tell one loss from the first of many. When the
// losses within Window exceed Threshold of the group, protection is on
// until a Window passes without a loss: every loss of the window that is
// not back, and every loss after, is held until its name registers again,
// for at most Hold from the loss. The cache, the leader and Changes apply every delete at
// once all the same; only the suspects a View yields (the gRPC resolver
// serves them) are held.
type Protection struct {
	// Threshold is the share of the group that, lost within Window, turns
	// protection on: 0.5 by default.
	Threshold float64
	// MinMembers is the smallest group protected: 3 by default. The losses
	// of a smaller group apply at once.
	MinMembers int
	// Window is how long a loss counts towards Threshold: the
	// constructor's ttl by default.
	Window time.Duration
	// Settle is how long a loss is held while protection is off: ttl/3, and
	// at most 1 s, by default.
	Settle time.Duration
	// Hold is the longest a loss is held while protection is on, from the
	// loss: 2×ttl − 1.5 s, and at least ttl, by default. A member that
	// dies is gone from the suspects within 3×ttl of its death: its key
	// goes up to ttl after it, and etcd looks for expired leases every
	// 500 ms.
	Hold time.Duration
}

// WithProtection tunes mass-loss protection; see Protection.
func WithProtection(p Protection) Option {
	return func(cfg *config) { cfg.protection, cfg.unprotected = p, false }
}

// WithoutProtection switches mass-loss protection off: no loss is ever
// held, and a View yields no suspects.
func WithoutProtection() Option {
	return func(cfg *config) { cfg.unprotected = true }
}

// resolve returns p with its defaults for ttl, or an error that wraps
// ErrInvalidArgument.
func (p Protection) resolve(ttl time.Duration) (Protection, error) {
	r := p
	switch {
	case math.IsNaN(r.Threshold) || r.Threshold < 0 || r.Threshold > 1:
		return Protection{}, fmt.Errorf("%w: protection threshold %v outside [0, 1]", ErrInvalidArgument, r.Threshold)
	case r.MinMembers < 0:
		return Protection{}, fmt.Errorf("%w: protection min members %d < 0", ErrInvalidArgument, r.MinMembers)
	case r.Window < 0 || r.Settle < 0 || r.Hold < 0:
		return Protection{}, fmt.Errorf("%w: negative protection duration (window %v, settle %v, hold %v)", ErrInvalidArgument, r.Window, r.Settle, r.Hold)
	}
	if r.Threshold == 0 {
		r.Threshold = 0.5
	}
	if r.MinMembers == 0 {
		r.MinMembers = 3
	}
	if r.Window == 0 {
		r.Window = ttl
	}
	if r.Settle == 0 {
		r.Settle = min(ttl/3, time.Second)
	}
	if r.Hold == 0 {
		r.Hold = max(2*ttl-3*time.Second/2, ttl)
	}
	if r.Settle > r.Hold {
		return Protection{}, fmt.Errorf("%w: protection settle %v longer than its hold %v", ErrInvalidArgument, r.Settle, r.Hold)
	}
	return r, nil
}
