// The batch token: it lets one batch of events change in place the index
// nodes it made, in both indexes of a snapshot.

package biregister

// batch marks the index nodes that one batch of events made. No published
// snapshot reaches them until the batch ends, so the batch changes them in
// place instead of copying them again: a burst of events costs one copy of
// each path it touches, not one per event. snapshot.apply makes one batch
// per call; a nil *batch copies every node it changes.
type batch struct{ _ int } // not zero-sized: every batch has an address of its own
