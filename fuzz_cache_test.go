// Fuzzing the cache: random histories of a group, fed in random batches
// through the watch loop's own functions (apply, adopt, the feed), checked
// against a plain map-and-sort model of etcd, the cache and the consumer.

package biregister

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/biregister/biregister/internal/fuzzbytes"
)

// fuzzPrefix is the group the cache fuzzing follows.
const fuzzPrefix = "/g/"

// fuzzNames are names chosen to be awkward: sharing prefixes, non-UTF-8,
// with a NUL, empty (the prefix key itself), with '/' (a deeper key).
var fuzzNames = []string{"a", "b", "ab", "a\x00", "\xff\xfe", "日本", "", "x/y", "x/", "/", "a b", "\x00"}

// fuzzEvent is one event of the fake etcd's history.
type fuzzEvent struct {
	put                  bool
	key, value           string
	create, mod, version int64
}

// event returns ev as the watch delivers it: a delete carries only the key
// and its revision. Every call makes new byte slices.
func (ev fuzzEvent) event() *clientv3.Event {
	if !ev.put {
		return &clientv3.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(ev.key), ModRevision: ev.mod}}
	}
	return &clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(ev.key), Value: []byte(ev.value),
		CreateRevision: ev.create, ModRevision: ev.mod, Version: ev.version}}
}

// fakeEtcd is the model of etcd's key space: keys, revisions, history.
type fakeEtcd struct {
	kvs     map[string]fuzzEvent // the live keys, as their last put
	rev     int64
	history []fuzzEvent
}

// txn applies puts (value != nil) and deletes at one new revision, as one
// etcd transaction; a delete of an absent key does nothing, and a
// transaction that changes nothing makes no revision.
func (e *fakeEtcd) txn(keys []string, values []*string) {
	var events []fuzzEvent
	rev := e.rev + 1
	seen := map[string]bool{}
	for i, k := range keys {
		if seen[k] { // etcd refuses a key twice in one transaction
			continue
		}
		seen[k] = true
		old, live := e.kvs[k]
		switch {
		case values[i] != nil && live:
			events = append(events, fuzzEvent{put: true, key: k, value: *values[i], create: old.create, mod: rev, version: old.version + 1})
		case values[i] != nil:
			events = append(events, fuzzEvent{put: true, key: k, value: *values[i], create: rev, mod: rev, version: 1})
		case live:
			events = append(events, fuzzEvent{key: k, mod: rev})
		}
	}
	if len(events) == 0 {
		return
	}
	e.rev = rev
	for _, ev := range events {
		if ev.put {
			e.kvs[ev.key] = ev
		} else {
			delete(e.kvs, ev.key)
		}
	}
	e.history = append(e.history, events...)
}

// modelName is the model's own rule for which keys are members: one level
// below the prefix, a name that is not empty.
func modelName(key string) (string, bool) {
	name, ok := strings.CutPrefix(key, fuzzPrefix)
	return name, ok && name != "" && !strings.Contains(name, "/")
}

// members returns the members etcd holds, by name.
func (e *fakeEtcd) members() map[string]Member {
	all := map[string]Member{}
	for k, kv := range e.kvs {
		if name, ok := modelName(k); ok {
			all[name] = Member{Name: name, Value: kv.value, CreateRevision: kv.create}
		}
	}
	return all
}

// inOrder returns the members oldest first: create revision, then name.
func inOrder(members map[string]Member) []Member {
	all := slices.Collect(maps.Values(members))
	slices.SortFunc(all, func(a, b Member) int {
		if a.CreateRevision != b.CreateRevision {
			return int(a.CreateRevision - b.CreateRevision)
		}
		return strings.Compare(a.Name, b.Name)
	})
	return all
}

// cacheFuzz is one run: the fake etcd, the watcher under test, and the
// model of its cache and of what its consumer has seen.
type cacheFuzz struct {
	t    *testing.T
	in   *fuzzbytes.Reader
	etcd fakeEtcd
	w    *watcher
	size int // the feed's buffer size

	pending []fuzzEvent // the watch stream: events sent, not yet applied

	cache    map[string]Member // what the cache must hold
	cacheRev int64             // the revision the cache reflects, progress notifications included
	// appliedRev is the revision of the newest event or listing the cache
	// holds: an event at or below it is a replay.
	appliedRev int64
	want       []Change // every change the cache made, in order

	got    []Change          // what the consumer received
	view   map[string]string // the consumer's idea of the group
	resync bool              // the consumer has received a RESYNC

	old []oldSnapshot // published snapshots, which must never change
}

type oldSnapshot struct {
	s       *snapshot
	members []Member
}

// FuzzCache runs a random history of a group through the cache and checks
// after every step: members, order, leader and revision against the model,
// the feed's bound, and that the consumer sees every change in order or,
// where changes did not fit, a RESYNC in their place; at the end, that the
// consumer's view is the group, and no published snapshot changed.
func FuzzCache(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzCache (op bytes as decoded by run: see the
	// switch there), and random histories, one per buffer size.
	rng := rand.New(rand.NewPCG(1, 2))
	for size := range byte(10) {
		seed := make([]byte, 600)
		for i := range seed {
			seed[i] = byte(rng.Uint32())
		}
		seed[0] = size
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := fuzzbytes.New(data)
		// Buffer sizes around the channel's 64 slots, and tiny ones.
		size := []int{1, 2, 3, 7, feedSlots - 1, feedSlots, feedSlots + 1, 100, 130, 1000}[in.Intn(10)]
		// The cache without mass-loss protection, which marks a loss
		// Suspect by the clock (protection_test.go tests it).
		cfg, prefix, err := newConfig([]string{"unused"}, fuzzPrefix, 10, []Option{WithBufferSize(size), WithoutProtection()})
		if err != nil {
			t.Fatal(err)
		}
		z := &cacheFuzz{
			t: t, in: in, size: size,
			etcd:  fakeEtcd{kvs: map[string]fuzzEvent{}, rev: 1},
			w:     newWatcher(nil, func() {}, prefix, cfg),
			cache: map[string]Member{},
			view:  map[string]string{},
		}
		z.run()
	})
}

func (z *cacheFuzz) run() {
	// Keys written before the watcher starts: its first listing has them.
	for range z.in.Intn(4) {
		z.write()
	}
	z.relist(true)
	for ops := 0; ops < 300 && !z.in.Empty(); ops++ {
		switch op := z.in.Intn(12); op {
		case 0, 1, 2, 3, 4:
			z.write()
		case 5, 6:
			z.deliver()
		case 7:
			z.relist(false)
		case 8:
			z.consume(z.in.Intn(40))
		case 9:
			z.replay()
		case 10:
			z.bulk()
		case 11:
			z.progress()
		}
		z.owner()
		z.check()
	}
	// The end: everything delivered, the consumer catches up.
	z.pending = z.since(z.appliedRev)
	z.deliverN(len(z.pending), 1)
	z.check()
	z.consume(math.MaxInt)
	z.checkConsumer()
	z.t.Logf("buffer %d, revision %d, %d members, %d changes made, %d received (%d RESYNC)",
		z.size, z.cacheRev, len(z.cache), len(z.want), len(z.got), z.w.feed.resyncs.Load())
	for _, o := range z.old {
		if got := slices.Collect(o.s.members()); !slices.Equal(got, o.members) {
			i := firstDifference(got, o.members)
			z.t.Fatalf("a published snapshot at revision %d changed: %d members, was %d; at %d: %s, was %s",
				o.s.revision, len(got), len(o.members), i, brief(got, i), brief(o.members, i))
		}
	}
}

// key returns a key chosen by the input: awkward names, one of many
// plain ones, any bytes, and keys that are not members.
func (z *cacheFuzz) key() string {
	switch k := z.in.Intn(16); {
	case k < len(fuzzNames):
		return fuzzPrefix + fuzzNames[k]
	case k == 12:
		return fuzzPrefix + fmt.Sprintf("m%03d", z.in.Byte())
	case k == 13:
		return fuzzPrefix + z.in.String(8)
	case k == 14:
		return fuzzPrefix + z.in.String(4) + "/" + z.in.String(4)
	default:
		return strings.TrimSuffix(fuzzPrefix, "/") // the group's name, not under it
	}
}

func (z *cacheFuzz) value() string {
	switch z.in.Intn(6) {
	case 0:
		return ""
	case 1:
		return z.in.String(16)
	case 2:
		return "\xff\x00\xc3"
	case 3:
		return strings.Repeat("v", 4096)
	default:
		return fmt.Sprint("v", z.etcd.rev)
	}
}

// write makes one transaction of one to four puts and deletes.
func (z *cacheFuzz) write() {
	var keys []string
	var values []*string
	for range 1 + z.in.Intn(4) {
		keys = append(keys, z.key())
		if z.in.Intn(3) == 0 {
			values = append(values, nil)
		} else {
			v := z.value()
			values = append(values, &v)
		}
	}
	z.etcd.txn(keys, values)
	z.pending = append(z.pending, z.sinceStream()...)
}

// bulk puts or deletes many plain members in one transaction, from an odd
// from in descending name order: the keys one transaction creates share a
// revision and come in its order, which the cache's order index must take.
func (z *cacheFuzz) bulk() {
	from, n, del := z.in.Byte(), z.in.Intn(80), z.in.Intn(3) == 0
	var keys []string
	var values []*string
	step := 1
	if from%2 == 1 {
		step = -1
	}
	for i := range n {
		keys = append(keys, fuzzPrefix+fmt.Sprintf("m%03d", (int(from)+step*i+256)%256))
		v := fmt.Sprint("bulk", z.etcd.rev)
		if del {
			values = append(values, nil)
		} else {
			values = append(values, &v)
		}
	}
	z.etcd.txn(keys, values)
	z.pending = append(z.pending, z.sinceStream()...)
}

// sinceStream returns the history after the last event on the stream (or
// applied): what a write adds to the stream.
func (z *cacheFuzz) sinceStream() []fuzzEvent {
	last := z.appliedRev
	if len(z.pending) > 0 {
		last = z.pending[len(z.pending)-1].mod
	}
	return z.since(last)
}

func (z *cacheFuzz) since(rev int64) []fuzzEvent {
	i, _ := slices.BinarySearchFunc(z.etcd.history, rev+1, func(ev fuzzEvent, r int64) int { return int(ev.mod - r) })
	return slices.Clone(z.etcd.history[i:])
}

// deliver applies some of the stream's events, in one to three responses.
func (z *cacheFuzz) deliver() {
	z.deliverN(z.in.Intn(len(z.pending)+1), 1+z.in.Intn(3))
}

func (z *cacheFuzz) deliverN(n, responses int) {
	if n == 0 {
		return
	}
	// Whole revisions only: etcd never splits one between responses.
	for n < len(z.pending) && z.pending[n].mod == z.pending[n-1].mod {
		n++
	}
	batch := z.pending[:n]
	z.pending = z.pending[n:]
	var resps []clientv3.WatchResponse
	var events []*clientv3.Event
	for i, ev := range batch {
		events = append(events, ev.event())
		if i == len(batch)-1 || (len(resps) < responses-1 && batch[i+1].mod != ev.mod && z.in.Intn(2) == 0) {
			resps = append(resps, clientv3.WatchResponse{Events: events})
			events = nil
		}
	}
	// A stream that caught up may add a progress notification.
	rev := int64(0)
	if len(z.pending) == 0 && z.in.Intn(4) == 0 {
		rev = z.etcd.rev
		resps = append(resps, clientv3.WatchResponse{})
		setHeaderRevision(&resps[len(resps)-1], rev)
	}
	z.apply(batch, resps)
	z.cacheRev = max(z.cacheRev, rev)
}

// progress applies a progress notification: the current revision once
// the stream has caught up, or an older one, as a lagging member reports,
// or the current one while events are still on their way, as etcd before
// 3.4.25 and 3.5.8 sends it (etcd-io/etcd#15220).
func (z *cacheFuzz) progress() {
	rev := z.etcd.rev
	if (len(z.pending) > 0 && z.in.Intn(2) == 0) || z.in.Intn(3) == 0 {
		rev = 1 + int64(z.in.Intn(int(min(z.cacheRev, 255))))
	}
	resp := clientv3.WatchResponse{}
	setHeaderRevision(&resp, rev)
	if !resp.IsProgressNotify() {
		z.t.Fatal("the fuzzer's progress notification is not one")
	}
	z.apply(nil, []clientv3.WatchResponse{resp})
	z.cacheRev = max(z.cacheRev, rev)
}

// setHeaderRevision sets the revision of resp's header, a value in etcd's
// client 3.6 and a pointer in 3.7.
func setHeaderRevision(resp *clientv3.WatchResponse, rev int64) {
	switch h := any(&resp.Header).(type) {
	case *etcdserverpb.ResponseHeader:
		h.Revision = rev
	case **etcdserverpb.ResponseHeader:
		*h = &etcdserverpb.ResponseHeader{Revision: rev}
	}
}

// apply runs the watch loop's apply, and the model's: events already held
// change nothing; a put of a member sets it; a delete of a member held
// removes it.
func (z *cacheFuzz) apply(batch []fuzzEvent, resps []clientv3.WatchResponse) {
	held := z.appliedRev
	for _, ev := range batch {
		z.cacheRev = max(z.cacheRev, ev.mod)
		z.appliedRev = max(z.appliedRev, ev.mod)
		name, ok := modelName(ev.key)
		if !ok || ev.mod <= held {
			continue
		}
		if ev.put {
			z.cache[name] = Member{Name: name, Value: ev.value, CreateRevision: ev.create}
			z.want = append(z.want, Change{Name: name, Op: OpPut, Value: ev.value, Revision: ev.mod})
		} else if old, ok := z.cache[name]; ok {
			delete(z.cache, name)
			z.want = append(z.want, Change{Name: name, Op: OpDelete, Value: old.Value, Revision: ev.mod})
		}
	}
	z.w.apply(resps)
	// The cache must have copied what it keeps: etcd's client may reuse
	// the buffers of a response.
	for _, r := range resps {
		for _, ev := range r.Events {
			clear(ev.Kv.Key)
			clear(ev.Kv.Value)
		}
	}
}

// relist lists the group as etcd holds it now, as the watch loop does
// when it starts or when the watch fails; the stream starts again after
// the listing's revision.
func (z *cacheFuzz) relist(first bool) {
	var kvs []*mvccpb.KeyValue
	for _, k := range slices.Sorted(maps.Keys(z.etcd.kvs)) {
		if strings.HasPrefix(k, fuzzPrefix) { // what a Get of the prefix returns
			kv := z.etcd.kvs[k]
			kvs = append(kvs, &mvccpb.KeyValue{Key: []byte(k), Value: []byte(kv.value), CreateRevision: kv.create, ModRevision: kv.mod, Version: kv.version})
		}
	}
	var listed []Member
	for _, kv := range kvs {
		if m, ok := newMember(z.w.prefix, kv); ok {
			listed = append(listed, m)
		}
	}
	if z.in.Intn(2) == 0 { // replace takes members in any order
		slices.Reverse(listed)
	}
	next := z.etcd.members()
	var gone, puts []Member
	for name, m := range z.cache {
		if n, ok := next[name]; !ok || n.CreateRevision != m.CreateRevision {
			gone = append(gone, m)
		}
	}
	for name, m := range next {
		if old, ok := z.cache[name]; !ok || old != m {
			puts = append(puts, m)
		}
	}
	for _, m := range inOrder(mapOf(gone)) {
		z.want = append(z.want, Change{Name: m.Name, Op: OpDelete, Value: m.Value, Revision: z.etcd.rev})
	}
	for _, m := range inOrder(mapOf(puts)) {
		z.want = append(z.want, Change{Name: m.Name, Op: OpPut, Value: m.Value, Revision: z.etcd.rev})
	}
	why := causeWatchFailed
	if first {
		why = causeStart
	}
	z.w.adopt(listing{members: listed, header: &etcdserverpb.ResponseHeader{ClusterId: 1, Revision: z.etcd.rev}}, why)
	for _, kv := range kvs {
		clear(kv.Key)
		clear(kv.Value)
	}
	z.cache, z.cacheRev, z.appliedRev, z.pending = next, z.etcd.rev, z.etcd.rev, nil
}

// cut quotes s for a failure message, a long s cut short.
func cut(s string) string {
	if len(s) > 20 {
		return fmt.Sprintf("%+q…(%d bytes)", s[:20], len(s))
	}
	return fmt.Sprintf("%+q", s)
}

// brief returns members[i] for a failure message.
func brief(members []Member, i int) string {
	if i >= len(members) {
		return "none"
	}
	m := members[i]
	return fmt.Sprintf("{%+q %s %d}", m.Name, cut(m.Value), m.CreateRevision)
}

func briefChange(c Change) string {
	return fmt.Sprintf("%s %+q %s at %d", c.Op, c.Name, cut(c.Value), c.Revision)
}

// mapDiff returns the first name, in order, where got and want differ.
func mapDiff(got, want map[string]string) string {
	names := slices.Sorted(maps.Keys(got))
	names = slices.Compact(slices.Sorted(slices.Values(append(names, slices.Collect(maps.Keys(want))...))))
	for _, name := range names {
		g, gok := got[name]
		w, wok := want[name]
		if g != w || gok != wok {
			return fmt.Sprintf("%d names, want %d; %+q: %s %v, want %s %v", len(got), len(want), name, cut(g), gok, cut(w), wok)
		}
	}
	return "no difference"
}

func mapOf(members []Member) map[string]Member {
	m := make(map[string]Member, len(members))
	for _, x := range members {
		m[x.Name] = x
	}
	return m
}

// replay starts the stream again a little before the cache's revision, as
// a watch resumed at the cache's own revision does: the events the cache
// holds come again.
func (z *cacheFuzz) replay() {
	z.pending = z.since(max(0, z.appliedRev-1-int64(z.in.Intn(4))))
}

// owner does what the watch loop's select does while the consumer has room:
// hand it what waits.
func (z *cacheFuzz) owner() {
	for {
		ch := z.w.feed.pending()
		if ch == nil {
			return
		}
		select {
		case ch <- z.w.feed.next(z.w.resyncRevision()):
			z.w.deliverWaiting()
		default:
			return
		}
	}
}

// consume receives up to n changes, as a consumer does, and keeps its view.
func (z *cacheFuzz) consume(n int) {
	for range n {
		var c Change
		select {
		case c = <-z.w.feed.ch:
		default:
			return
		}
		z.got = append(z.got, c)
		switch c.Op {
		case OpResync:
			z.resync = true
			z.view = z.w.GetAll()
			if c.Revision > z.w.resyncRevision() {
				z.t.Fatalf("RESYNC at revision %d, ahead of the cache at %d", c.Revision, z.w.resyncRevision())
			}
		case OpPut:
			z.view[c.Name] = c.Value
		case OpDelete:
			if v, ok := z.view[c.Name]; !z.resync && (!ok || v != c.Value) {
				z.t.Fatalf("%s of a member the consumer holds as %s, %v", briefChange(c), cut(v), ok)
			}
			delete(z.view, c.Name)
		default:
			z.t.Fatalf("change of op %q", c.Op)
		}
		z.owner()
	}
}

// check compares the cache with the model, and the feed with its bound.
func (z *cacheFuzz) check() {
	t, w := z.t, z.w
	s := w.snap.Load()
	want := inOrder(z.cache)
	if s.revision != z.cacheRev || s.applied != z.appliedRev {
		t.Fatalf("cache at revision %d, applied %d, want %d, %d", s.revision, s.applied, z.cacheRev, z.appliedRev)
	}
	if got := w.Members(); !slices.Equal(got, want) {
		i := firstDifference(got, want)
		t.Fatalf("Members() has %d members, want %d; at %d: %s, want %s", len(got), len(want), i, brief(got, i), brief(want, i))
	}
	names, values := w.GetNames(), w.GetValues()
	if len(names) != len(want) || len(values) != len(want) {
		t.Fatalf("%d names and %d values for %d members", len(names), len(values), len(want))
	}
	all := map[string]string{}
	for i, m := range want {
		if names[i] != m.Name || values[i] != m.Value {
			t.Fatalf("GetNames/GetValues()[%d] = %+q/%s, want %+q/%s", i, names[i], cut(values[i]), m.Name, cut(m.Value))
		}
		if v := w.GetValueByName(m.Name); v != m.Value {
			t.Fatalf("GetValueByName(%+q) = %s, want %s", m.Name, cut(v), cut(m.Value))
		}
		all[m.Name] = m.Value
	}
	if got := w.GetAll(); !maps.Equal(got, all) {
		t.Fatalf("GetAll() differs from the group: %s", mapDiff(got, all))
	}
	for _, name := range fuzzNames {
		if _, ok := z.cache[name]; !ok && w.GetValueByName(name) != "" {
			t.Fatalf("GetValueByName(%+q) of a name not in the group = %s", name, cut(w.GetValueByName(name)))
		}
	}
	var leader Member
	if len(want) > 0 {
		leader = want[0]
	}
	if name, value := w.GetLeader(); name != leader.Name || value != leader.Value {
		t.Fatalf("GetLeader() = %+q %s, want %+q %s", name, cut(value), leader.Name, cut(leader.Value))
	}
	f := w.feed
	if held := len(f.ch) + len(f.queue) - f.head; held > z.size {
		t.Fatalf("the feed holds %d changes, more than its size %d", held, z.size)
	}
	if len(z.old) == 0 || z.old[len(z.old)-1].s != s {
		if len(z.old) < 16 {
			z.old = append(z.old, oldSnapshot{s, want})
		} else {
			z.old[len(z.want)%16] = oldSnapshot{s, want}
		}
	}
}

// checkConsumer checks, once everything was received, that the consumer
// got the cache's changes in order, with a RESYNC wherever some are
// missing and nowhere else, and that its view is the group.
func (z *cacheFuzz) checkConsumer() {
	t := z.t
	if z.w.feed.pending() != nil || len(z.w.feed.ch) > 0 || z.w.feed.queue != nil {
		t.Fatal("the feed still holds changes after the consumer caught up, or its queue's memory")
	}
	j := 0       // the next change of want the consumer may receive
	resyncs := 0 // RESYNCs received since the last change
	for i, c := range z.got {
		if i > 0 && c.Revision < z.got[i-1].Revision {
			t.Fatalf("change %d received, %s, goes back from revision %d", i, briefChange(c), z.got[i-1].Revision)
		}
		if c.Op == OpResync {
			resyncs++
			continue
		}
		k := j
		for k < len(z.want) && z.want[k] != c {
			k++
		}
		switch {
		case k == len(z.want):
			t.Fatalf("change %d received, %s, is not among the cache's %d changes from the %dth on", i, briefChange(c), len(z.want)-j, j)
		case k > j && resyncs == 0:
			t.Fatalf("%d changes from %s on were lost before %s without a RESYNC", k-j, briefChange(z.want[j]), briefChange(c))
		case k == j && resyncs > 0:
			t.Fatalf("a RESYNC before %s stands for no lost change", briefChange(c))
		}
		j, resyncs = k+1, 0
	}
	switch {
	case j < len(z.want) && resyncs == 0:
		t.Fatalf("%d changes from %s on were lost at the end without a RESYNC", len(z.want)-j, briefChange(z.want[j]))
	case j == len(z.want) && resyncs > 0:
		t.Fatal("a RESYNC at the end stands for no lost change")
	}
	if want := z.w.GetAll(); !maps.Equal(z.view, want) {
		t.Fatalf("the consumer's view differs from the group: %s", mapDiff(z.view, want))
	}
	if got, want := z.w.GetAll(), z.etcd.members(); len(got) != len(want) {
		t.Fatalf("the cache holds %d members, etcd %d", len(got), len(want))
	}
}
