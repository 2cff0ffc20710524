// Package syncbuf has a buffer that goroutines may write while a test reads
// it: the output of a logger or of a running command.
package syncbuf

import (
	"bytes"
	"strings"
	"sync"
	"time"
)

// Buffer is a bytes.Buffer safe for concurrent Write and String, that a test
// can also wait on for text to be written.
type Buffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	written chan struct{} // closed by the next Write; nil until a wait needs it
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.written != nil {
		close(b.written)
		b.written = nil
	}
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitFor waits, without polling, until every string of want has been
// written, or until deadline; it returns the first string still missing
// then, or "".
func (b *Buffer) WaitFor(deadline <-chan time.Time, want ...string) (missing string) {
	for {
		b.mu.Lock()
		text := b.buf.String()
		if b.written == nil {
			b.written = make(chan struct{})
		}
		written := b.written
		b.mu.Unlock()
		missing = ""
		for _, w := range want {
			if !strings.Contains(text, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return ""
		}
		select {
		case <-written:
		case <-deadline:
			return missing
		}
	}
}
