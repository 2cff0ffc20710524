// A read of the watcher's cache: its members and revision from one
// snapshot, and which of the watcher's listings it surely holds.

package main

import "github.com/biregister/biregister"

// readAttempts bounds the reads of a cache that changes under them.
const readAttempts = 3

// reading is one read of a watcher's cache. Only watch's goroutine uses it.
type reading struct {
	// Set by read.
	members  []biregister.Member
	revision int64           // the cache's, at most that of members
	replaced <-chan struct{} // closed once the cache moved on from members
	listings int64           // the watcher's listings of the group, counted before the read
	// covers is how many of the watcher's listings the read surely holds:
	// the watcher counts a listing before it publishes it, and a read may
	// come between.
	covers int64
	// byName has members' create revisions by name; index builds it.
	byName map[string]int64
}

// read reads w's cache. previous is the read before, or nil.
func read(w biregister.Watcher, previous *reading) *reading {
	listings := w.Status().Listings
	// The first listing is published before NewWatcher returns. A read
	// counted after a listing was, and since replaced, was replaced by that
	// listing or a later one: a read now holds it.
	covers := max(listings-1, 1)
	if previous != nil && previous.listings == listings && closed(previous.replaced) {
		covers = listings
	}
	r := &reading{listings: listings, covers: covers}
	for range readAttempts {
		r.replaced = w.Updated()
		r.revision = w.Status().Revision
		r.members = w.Members()
		if !closed(r.replaced) {
			break // all three from one snapshot
		}
	}
	return r
}

// index returns the members' create revisions by name.
func (r *reading) index() map[string]int64 {
	if r.byName == nil {
		r.byName = make(map[string]int64, len(r.members))
		for _, m := range r.members {
			r.byName[m.Name] = m.CreateRevision
		}
	}
	return r.byName
}

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
