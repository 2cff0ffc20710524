// The Registers on a shared Lease: reserving a key, joining, leaving, and
// what the Lease hands on to them.

package biregister

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// attachment is a Register joining the Lease — reserving its key before
// it registers, or, registered on lease, becoming one of its Registers —
// and where to say whether it may.
type attachment struct {
	r       *register
	lease   clientv3.LeaseID // the lease r registered on; 0 while reserving
	reserve bool
	reply   chan error
}

// attach reserves a's key for its Register, unless the Lease is closed or
// another Register on it has that key (a key on the lease would read as
// the Register's own), or makes the Register one of the Lease's. A
// Register that registered on a lease lost since is told at once.
func (l *Lease) attach(a attachment) error {
	switch {
	case l.closed:
		return fmt.Errorf("%w: the Lease", ErrClosed)
	case a.reserve && l.keys[a.r.key]:
		return fmt.Errorf("%w: %s, by another Register on the same Lease", ErrNameTaken, quoteKey(a.r.key))
	case a.reserve:
		l.keys[a.r.key] = true
		l.users.Add(1)
		return nil
	}
	l.setMembers(append(slices.Clone(*l.members.Load()), a.r))
	if a.lease != l.lease {
		a.r.leaseLost <- struct{}{} // its own slot, empty until now
	}
	return nil
}

func (l *Lease) setMembers(members []*register) { l.members.Store(&members) }

// reserve keeps r's key for r while it registers: no other Register on
// the Lease may have it.
func (l *Lease) reserve(r *register) error {
	return l.ask(attachment{r: r, reserve: true})
}

// join makes r, registered on lease, one of the Lease's Registers: told of
// losses, and closed with it.
func (l *Lease) join(r *register, lease clientv3.LeaseID) error {
	return l.ask(attachment{r: r, lease: lease})
}

func (l *Lease) ask(a attachment) error {
	a.reply = make(chan error, 1)
	select {
	case l.attaching <- a:
		return <-a.reply
	case <-l.done:
		return fmt.Errorf("%w: the Lease", ErrClosed)
	}
}

// settled returns the lease keys are put on now, once run has finished
// the puts it had under way, or 0 once the Lease is closed (its revoke
// took every key on it); false if run did not answer within wait.
func (l *Lease) settled(wait time.Duration) (clientv3.LeaseID, bool) {
	reply := make(chan clientv3.LeaseID, 1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case l.settling <- reply:
		return <-reply, true
	case <-l.done:
		return 0, true
	case <-timer.C:
		return 0, false
	}
}

// departure is a Register that left the Lease. abandoned: it left
// unregistered, with a put of its key perhaps still under way, whose key
// run deletes if it finds it on the lease.
type departure struct {
	r         *register
	abandoned bool
}

// leave takes r off the Lease at once, and frees its key, as run will see.
func (l *Lease) leave(r *register, abandoned bool) {
	l.departing.Lock()
	l.departing.queue = append(l.departing.queue, departure{r: r, abandoned: abandoned})
	l.departing.Unlock()
	select {
	case l.departed <- struct{}{}:
	default:
	}
	l.users.Done()
}

// takeDepartures takes off the Registers that left: it deletes the key an
// abandoned one may have left on the lease before it frees the key, so
// that it cannot be another Register's yet.
func (l *Lease) takeDepartures() {
	l.departing.Lock()
	gone := l.departing.queue
	l.departing.queue = nil
	l.departing.Unlock()
	if len(gone) == 0 {
		return
	}
	for _, d := range gone {
		if d.abandoned && l.lease != 0 {
			ctx, cancel := context.WithTimeout(l.putsCtx, closeWait(l.ttl))
			err := deleteIfOnLease(ctx, l.client, d.r.key, l.lease)
			cancel()
			if err != nil {
				l.logger.Warn("biregister: deleting the key of a Register that left unregistered failed", "key", d.r.key, "err", err)
			}
		}
		delete(l.keys, d.r.key)
	}
	l.setMembers(slices.DeleteFunc(slices.Clone(*l.members.Load()), func(m *register) bool {
		return slices.ContainsFunc(gone, func(d departure) bool { return d.r == m })
	}))
}

// observe hands the header of a keepalive's answer to every Register's
// watcher, as a Register's own keeper does.
func (l *Lease) observe(header *etcdserverpb.ResponseHeader) {
	for _, r := range *l.members.Load() {
		r.watcher.observe(header)
	}
}

// revived wakes every Register's loop: the lease came back to life.
func (l *Lease) revived() {
	for _, r := range *l.members.Load() {
		r.changed.notify()
	}
}

// deleteIfOnLease deletes key if it is on lease: a key put there for a
// Register that left the Lease, and no other Register's, since the key
// stays reserved for it until then.
func deleteIfOnLease(ctx context.Context, client *clientv3.Client, key string, lease clientv3.LeaseID) error {
	_, err := client.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(key), "=", lease)).Then(clientv3.OpDelete(key)).Commit()
	return err
}
