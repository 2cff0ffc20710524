// Suspects: the losses a watcher holds for mass-loss protection, weighed
// by the watch loop as it applies each batch of changes (see Protection).

package biregister

import (
	"slices"
	"time"
)

// guard weighs a group's losses and holds them as suspects. The watch loop
// owns it: only the loop calls its methods, and readers see what it holds
// through the snapshots (snapshot.suspects, snapshot.protected). A nil
// guard, protection switched off, holds nothing.
type guard struct {
	Protection // resolved: no zero field

	suspects nameTrie           // the members held, each as it was lost
	held     map[string]suspect // by name
	// The suspects by release: those held for Settle and those held for
	// Hold, each queue in order of loss. An entry whose suspect was
	// released or lost again since is skipped when it comes up.
	settling, holding []queued
	serial            uint64 // the last suspect's (suspect.serial)

	lost   map[string]loss // the names lost within Window
	losses []queued        // the window's losses, oldest first; stale entries skipped
	absent int             // names in lost that are not members now

	on          time.Time // since when protection is on; zero while off
	protections int64     // times protection turned on
	timer       *time.Timer
}

// suspect is one held loss. serial tells its queue entry from those of an
// earlier loss of the same name.
type suspect struct {
	serial uint64
	lostAt time.Time
}

type queued struct {
	name   string
	at     time.Time
	serial uint64 // the suspect's; 0 in losses
}

// loss is a name lost within the window: when last, as what, and whether
// it is still not a member.
type loss struct {
	at     time.Time
	member Member
	absent bool
}

func newGuard(p Protection) *guard {
	return &guard{Protection: p, held: map[string]suspect{}, lost: map[string]loss{}}
}

// weigh takes the changes that lead from prev to next, made at now: it
// holds the losses among them that it must (marking their changes Suspect),
// releases the names that registered again, turns protection on or off,
// and gives next what it holds. next is not published yet. A listing
// (listed) has every DELETE among its changes, but maybe not every PUT.
func (g *guard) weigh(prev, next *snapshot, changes []Change, listed bool, now time.Time) {
	if g == nil {
		return
	}
	if listed {
		back := func(name string) {
			if _, ok := next.lookup(name); ok {
				g.returned(name)
			}
		}
		for name := range g.held {
			back(name)
		}
		for name, l := range g.lost {
			if l.absent {
				back(name)
			}
		}
	}
	var lostHere []int
	for i, c := range changes {
		switch {
		case c.Op == OpPut:
			g.returned(c.Name)
		case c.Op == OpDelete && !c.Left:
			m, ok := prev.lookup(c.Name)
			if !ok || m.Value != c.Value {
				// Joined and lost within the batch: its place is near
				// enough at its loss.
				m = Member{Name: c.Name, Value: c.Value, CreateRevision: c.Revision}
			}
			g.lose(m, now)
			lostHere = append(lostHere, i)
		}
	}
	g.expire(now)
	if next.size()+g.absent >= g.MinMembers {
		for _, i := range lostHere {
			c := &changes[i]
			if l := g.lost[c.Name]; l.absent && l.at.Equal(now) { // else back in the same batch
				g.hold(l.member, now)
				c.Suspect = true
			}
		}
	}
	g.judge(next.size(), now)
	g.show(next)
	g.arm(now)
}

// show gives s, not published yet, what g holds.
func (g *guard) show(s *snapshot) {
	s.suspects, s.protected, s.protections = g.suspects, g.on, g.protections
}

// returned releases name, a member again, and counts it present.
func (g *guard) returned(name string) {
	if _, ok := g.held[name]; ok {
		delete(g.held, name)
		g.suspects, _, _ = g.suspects.delete(name, nil)
	}
	if l, ok := g.lost[name]; ok && l.absent {
		l.absent = false
		g.lost[name] = l
		g.absent--
	}
}

// lose counts m lost at now.
func (g *guard) lose(m Member, now time.Time) {
	if l, ok := g.lost[m.Name]; !ok || !l.absent {
		g.absent++
	}
	g.lost[m.Name] = loss{at: now, member: m, absent: true}
	g.losses = append(g.losses, queued{name: m.Name, at: now})
	if len(g.losses) > 2*len(g.lost)+64 {
		// Names lost again and again within a long window: one entry
		// each is enough.
		g.losses = g.losses[:0:0]
		for name, l := range g.lost {
			g.losses = append(g.losses, queued{name: name, at: l.at})
		}
		slices.SortFunc(g.losses, func(a, b queued) int { return a.at.Compare(b.at) })
	}
}

// hold makes m, lost at lostAt, a suspect, released after Settle or, under
// protection, after Hold.
func (g *guard) hold(m Member, lostAt time.Time) {
	g.serial++
	g.held[m.Name] = suspect{serial: g.serial, lostAt: lostAt}
	g.suspects, _, _ = g.suspects.set(m, nil)
	q := queued{name: m.Name, at: lostAt, serial: g.serial}
	if g.on.IsZero() {
		g.settling = append(g.settling, q)
	} else {
		g.holding = append(g.holding, q)
	}
}

// expire forgets the losses older than Window.
func (g *guard) expire(now time.Time) {
	for len(g.losses) > 0 && !now.Before(g.losses[0].at.Add(g.Window)) {
		q := g.losses[0]
		g.losses = g.losses[1:]
		if l := g.lost[q.name]; l.at.Equal(q.at) {
			if l.absent {
				g.absent--
			}
			delete(g.lost, q.name)
		}
	}
}

// judge turns protection on when the window's losses exceed Threshold of
// the group (the members, and the names lost within the window that are
// not back), and off once a whole window passed without a loss: a loss
// that trickles on is the same loss. Turned on, it holds every loss of the
// window that is not back for Hold from its loss: those settling, and
// those that settled out before the threshold was crossed, which were
// lost with the others.
func (g *guard) judge(members int, now time.Time) {
	if !g.on.IsZero() {
		if len(g.lost) == 0 {
			g.on = time.Time{}
		}
		return
	}
	group := members + g.absent
	if group < g.MinMembers || float64(len(g.lost)) <= g.Threshold*float64(group) {
		return
	}
	g.on = now
	g.protections++
	g.settling = nil
	for _, l := range g.lost {
		if l.absent {
			if s, ok := g.held[l.member.Name]; ok {
				l.at = s.lostAt
			}
			g.hold(l.member, l.at)
		}
	}
	// In order of loss, as releaseDue takes them; the earlier entries of
	// a suspect held again are skipped by their serial.
	slices.SortStableFunc(g.holding, func(a, b queued) int { return a.at.Compare(b.at) })
}

// release releases the suspects due by now and judges protection again;
// it reports whether what readers see changed.
func (g *guard) release(members int, now time.Time) bool {
	before, wasOn := g.suspects.size, g.on
	g.settling = g.releaseDue(g.settling, g.Settle, now)
	g.holding = g.releaseDue(g.holding, g.Hold, now)
	g.expire(now)
	g.judge(members, now)
	g.arm(now)
	return g.suspects.size != before || !g.on.Equal(wasOn)
}

// releaseDue releases the suspects of queue held for d by now, and returns
// what is left of it.
func (g *guard) releaseDue(queue []queued, d time.Duration, now time.Time) []queued {
	for len(queue) > 0 && !now.Before(queue[0].at.Add(d)) {
		q := queue[0]
		queue = queue[1:]
		if s, ok := g.held[q.name]; ok && s.serial == q.serial {
			delete(g.held, q.name)
			g.suspects, _, _ = g.suspects.delete(q.name, nil)
		}
	}
	if len(queue) == 0 {
		return nil // lets the array go
	}
	return queue
}

// arm sets the timer to the next release, or to when protection may turn
// off.
func (g *guard) arm(now time.Time) {
	var next time.Time
	sooner := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	if len(g.settling) > 0 {
		sooner(g.settling[0].at.Add(g.Settle))
	}
	if len(g.holding) > 0 {
		sooner(g.holding[0].at.Add(g.Hold))
	}
	if !g.on.IsZero() && len(g.losses) > 0 {
		sooner(g.losses[0].at.Add(g.Window))
	}
	if next.IsZero() {
		if g.timer != nil {
			g.timer.Stop()
		}
		return
	}
	if g.timer == nil {
		g.timer = time.NewTimer(next.Sub(now))
		return
	}
	g.timer.Reset(next.Sub(now))
}

// due returns a channel that receives when a suspect is due for release,
// or nil.
func (g *guard) due() <-chan time.Time {
	if g == nil || g.timer == nil {
		return nil
	}
	return g.timer.C
}

// stop stops the timer.
func (g *guard) stop() {
	if g != nil && g.timer != nil {
		g.timer.Stop()
	}
}
